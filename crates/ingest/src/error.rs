//! Errors of the Kafka side.

/// Result of Kafka operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong talking to Kafka.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is invalid; names the setting and the value.
    #[error("invalid kafka setting {setting}: {reason}")]
    Config {
        /// The setting.
        setting: &'static str,
        /// What is wrong, with the value.
        reason: String,
    },
    /// The broker refused or could not be reached.
    #[error("kafka {context}: {source}")]
    Kafka {
        /// What botmeter was doing.
        context: String,
        /// The client's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
}

impl Error {
    pub(crate) fn kafka(
        context: impl Into<String>,
    ) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        let context = context.into();
        move |source| Self::Kafka { context, source }
    }
}
