//! Template parsing and rendering: arbitrary sources never panic, and rendering stays within
//! the output bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xdpboot::template::{MAX_LEN, Template, Value, Vars};

const KNOWN: &[&str] = &["mac", "hostname", "initrds", "empty"];

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(template) = Template::parse(source, KNOWN) else {
        return;
    };
    let mut vars = Vars::new();
    vars.insert("mac".into(), Value::from("52:54:00:12:34:56"));
    vars.insert("hostname".into(), Value::from("n01"));
    vars.insert(
        "initrds".into(),
        Value::List(vec!["a".repeat(100), "b".into(), String::new()]),
    );
    vars.insert("empty".into(), Value::from(""));
    if let Ok(out) = template.render(&vars) {
        assert!(out.len() <= MAX_LEN);
    }
});
