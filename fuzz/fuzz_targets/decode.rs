//! `botmeter_model::decode` on arbitrary bytes: it never panics, and every error names a field and
//! a reason. Seed it with the examples: `cargo +nightly fuzz run decode fuzz/corpus/decode
//! schemas/events/examples -- -dict=fuzz/dicts/decode.dict`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = botmeter_model::decode(data) {
        assert!(!e.field.is_empty(), "empty field in {e:?}");
        assert!(!e.reason.is_empty(), "empty reason in {e:?}");
        let _ = (e.to_string(), e.kind());
    }
});
