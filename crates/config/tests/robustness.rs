//! Property tests: `parse` never panics, whatever it is given, and every diagnostic it
//! returns points at a real place in the text.
//!
//! Config arrives from files, etcd and the Admin API (`POST /config`), so a panic here
//! would take the control plane down on a typo. Inputs are random text and, more
//! usefully, a real configuration with random bytes replaced, deleted or inserted, which
//! reaches deep into the validator rather than failing at the first character.

use proptest::prelude::*;
use sluice_config::parse;

const REAL_WORLD: &str = include_str!("data/ok/real-world.yaml");

/// Checks the invariants on one input.
fn check(text: &str) {
    let line_count = u32::try_from(text.lines().count().max(1)).unwrap_or(u32::MAX);
    match parse(text, "fuzz.yml") {
        Ok(loaded) => {
            for w in &loaded.warnings {
                assert!(
                    w.line >= 1 && w.line <= line_count + 1,
                    "warning outside the text: {w}"
                );
            }
        }
        Err(diagnostics) => {
            assert!(diagnostics.error_count() > 0, "rejected without an error");
            for d in &diagnostics.items {
                assert!(d.line <= line_count + 1, "diagnostic beyond the text: {d}");
            }
            // The Kong renderings must not panic either.
            let _ = diagnostics.to_kong_error();
            let _ = diagnostics.to_kong_flattened();
            let _ = diagnostics.to_string();
        }
    }
}

/// One edit of the real-world file at a char boundary.
#[derive(Clone, Debug)]
enum Edit {
    Replace(usize, char),
    Delete(usize, usize),
    Insert(usize, String),
}

fn apply(base: &str, edit: &Edit) -> String {
    let chars: Vec<char> = base.chars().collect();
    let clamp = |i: usize| i.min(chars.len());
    let mut out: Vec<char> = chars.clone();
    match edit {
        Edit::Replace(at, c) => {
            if let Some(slot) = out.get_mut(clamp(*at)) {
                *slot = *c;
            }
        }
        Edit::Delete(at, len) => {
            let start = clamp(*at);
            let end = clamp(start + len);
            out.drain(start..end);
        }
        Edit::Insert(at, text) => {
            let at = clamp(*at);
            out.splice(at..at, text.chars());
        }
    }
    out.into_iter().collect()
}

fn edit_strategy() -> impl Strategy<Value = Edit> {
    let len = REAL_WORLD.chars().count();
    let interesting = prop::sample::select(vec![
        ':', '-', ' ', '\n', '[', ']', '{', '}', '"', '\'', '~', '*', '&', '!', '#', '0', '9', 'x',
        '\t', '|', ',',
    ]);
    prop_oneof![
        (0..len, interesting).prop_map(|(at, c)| Edit::Replace(at, c)),
        (0..len, 1usize..40).prop_map(|(at, n)| Edit::Delete(at, n)),
        (0..len, "[ -~\n]{1,20}").prop_map(|(at, s)| Edit::Insert(at, s)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        check(&text);
    }

    #[test]
    fn edited_real_config_never_panics(edits in prop::collection::vec(edit_strategy(), 1..4)) {
        let mut text = REAL_WORLD.to_owned();
        for edit in &edits {
            text = apply(&text, edit);
        }
        check(&text);
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let depth = 10_000;
    let text = format!(
        "_format_version: \"3.0\"\nx: {}{}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let Err(diagnostics) = parse(&text, "deep.yml") else {
        panic!("absurd nesting must be rejected");
    };
    assert!(diagnostics.error_count() > 0);
}

#[test]
fn alias_bombs_are_an_error_not_a_hang() {
    // "Billion laughs": each level doubles the size; 30 levels would be 2^30 nodes.
    let mut text = String::from("_format_version: \"3.0\"\na0: &a0 [x, x]\n");
    for level in 1..30 {
        let previous = level - 1;
        text.push_str(&format!(
            "a{level}: &a{level} [*a{previous}, *a{previous}]\n"
        ));
    }
    let started = std::time::Instant::now();
    let result = parse(&text, "bomb.yml");
    assert!(result.is_err());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "the parser's budget must stop it early"
    );
}
