//! What the benches read from a botmeter `/metrics` page (Prometheus text).

/// The sum of the values on the lines of the page at `url` that start with `name_and_labels` (a
/// metric's name, or its name and the start of its labels); `None` when no line does.
pub(crate) async fn scrape(url: &str, name_and_labels: &str) -> Option<f64> {
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    let values: Vec<f64> = text
        .lines()
        .filter(|line| line.starts_with(name_and_labels))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}
