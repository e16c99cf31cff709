//! `BindRule::parse` on arbitrary strings: it never panics, and what it accepts re-parses from its
//! `Display` to the same rule. `cargo +nightly fuzz run bind_rule -- -dict=fuzz/dicts/bind_rule.dict`.

#![no_main]

use std::collections::BTreeMap;

use botmeter_model::BindRule;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|rule: &str| {
    match BindRule::parse(rule) {
        Ok(parsed) => {
            let shown = parsed.to_string();
            assert_eq!(BindRule::parse(&shown).as_ref(), Ok(&parsed), "{rule:?} parsed, but its Display {shown:?} does not re-parse to it");
            let labels: BTreeMap<String, String> = [(rule.to_owned(), rule.to_owned())].into();
            let _ = parsed.matches(rule, Some(443), &labels);
        }
        Err(e) => {
            assert_eq!(e.rule, rule);
            assert!(!e.reason.is_empty());
        }
    }
});
