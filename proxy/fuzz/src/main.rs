//! The AFL++ entry point: `dime-fuzz TARGET`, run by `afl-fuzz` (see `proxy/fuzz/run.sh`).

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = dime_fuzz::target(&name) else {
        let names: Vec<&str> = dime_fuzz::TARGETS.iter().map(|t| t.name).collect();
        eprintln!("usage: dime-fuzz TARGET, one of: {}", names.join(", "));
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| (target.check)(data));
}
