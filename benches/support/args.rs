//! The command line of a cluster benchmark: `--bench` for the full measurement (otherwise a
//! quick check, as under `cargo test`), and the name filters `hack/test <filter>` passes on.

pub struct Args {
    pub full: bool,
    /// False when name filters were given and none matches this benchmark.
    pub selected: bool,
}

impl Args {
    pub fn parse(name: &str) -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
        Self {
            full: args.iter().any(|a| a == "--bench"),
            selected: filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())),
        }
    }
}
