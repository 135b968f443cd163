//! Generates the gRPC services and messages from the `.proto` files in `proto/`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "../../proto/raft.proto",
        "../../proto/kv.proto",
        "../../proto/cluster.proto",
        "../../proto/node.proto",
        "../../proto/agent.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure().compile_protos(&protos, &["../../proto"])?;
    Ok(())
}
