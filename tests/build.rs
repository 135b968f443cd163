//! Generates the etcd client used as the benchmark baseline.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../proto/bench/etcd_kv.proto";
    println!("cargo:rerun-if-changed={proto}");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&[proto], &["../proto/bench"])?;
    Ok(())
}
