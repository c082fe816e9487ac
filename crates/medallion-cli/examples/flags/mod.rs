//! Command-line flags of the measuring examples.

/// Takes `flag` and the value after it out of `args`, the value if there is one.
pub fn take(args: &mut Vec<String>, flag: &str) -> Option<String> {
    let at = args.iter().position(|a| a == flag)?;
    let value = args.get(at + 1).cloned();
    args.drain(at..(at + 2).min(args.len()));
    value
}
