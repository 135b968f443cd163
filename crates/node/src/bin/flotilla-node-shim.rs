//! Test-only stand-in for the `flotilla` binary's hidden shim subcommand: `flotilla-node-shim
//! __shim <mode> …` runs [`flotilla_node::runtime::shim::main`], which the runtime tests point
//! `RuntimeConfig::shim_path` at.

fn main() {
    let mut args = std::env::args_os().skip(1);
    match args.next() {
        Some(first) if first == flotilla_node::runtime::shim::SHIM_ARG => {
            flotilla_node::runtime::shim::main(args.collect())
        }
        _ => {
            eprintln!("usage: flotilla-node-shim __shim <mode> …");
            std::process::exit(2)
        }
    }
}
