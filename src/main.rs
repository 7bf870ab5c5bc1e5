#![deny(clippy::undocumented_unsafe_blocks)]

fn main() {
    std::process::exit(lanyard::cli::main_with(std::env::args().collect()));
}
