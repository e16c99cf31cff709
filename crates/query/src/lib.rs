//! botmeter's ClickHouse side: the schema migrations, the row writer, and the HTTP API that
//! answers reports from the tables.

pub mod rows;
