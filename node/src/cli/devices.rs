//! `hashgrid-node devices`: the wgpu adapters this rig exposes and its CPU.

use clap::Args;
use hashgrid_node::search::{cpu, gpu};
use serde_json::json;

#[derive(Debug, Args)]
pub struct DevicesArgs {
    /// Print one JSON line.
    #[arg(long)]
    json: bool,
}

pub fn run(args: DevicesArgs) -> anyhow::Result<()> {
    let adapters = gpu::list_adapters();
    let cpu = cpu::cpu_features();
    if args.json {
        println!("{}", json!({ "adapters": adapters, "cpu": cpu }));
        return Ok(());
    }
    if adapters.is_empty() {
        println!("GPU adapters: none (is a Vulkan, Metal or DX12 driver installed?)");
    } else {
        println!("GPU adapters:");
        for a in &adapters {
            let kind = if a.software { "software" } else { "hardware" };
            println!("  [{}] {} ({}, {}, {kind})", a.index, a.name, a.backend, a.device_type);
        }
    }
    println!(
        "CPU: {} ({} threads; SHA-NI {}, AVX2 {}, AVX-512 {})",
        cpu.model,
        cpu.threads,
        yes_no(cpu.sha_ni),
        yes_no(cpu.avx2),
        yes_no(cpu.avx512)
    );
    Ok(())
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}
