//! `state_memory` with mimalloc as the global allocator, as the `botmeter` binary runs it: the same
//! fleet, the same figures (see state_memory.rs). Run: `cargo bench -p botmeter-enrich --bench
//! state_memory_mimalloc`.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "state_memory.rs"]
mod state_memory;

fn main() {
    state_memory::main();
}
