//! `botmeter`: attributes ngrok usage to the bot user or user owning the credential behind it.
//! See `botmeter --help`.

use clap::Parser;

/// mimalloc instead of glibc's malloc: the traffic path allocates and frees a few dozen small
/// strings per event, and glibc's free lists were a sixth of the pipeline's CPU (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = botmeter::cli::Cli::parse();
    botmeter::cli::init_logging(&cli.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(botmeter::cli::execute(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
