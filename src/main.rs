#![deny(clippy::undocumented_unsafe_blocks)]

fn main() {
    // A CNI runtime execs the binary its conf's "type" names with CNI_COMMAND set, whatever
    // the binary is called and whatever arguments it passes: then lanyard is a plugin.
    if std::env::var_os("CNI_COMMAND").is_some() {
        std::process::exit(lanyard::cni::main());
    }
    std::process::exit(lanyard::cli::main_with(std::env::args().collect()));
}
