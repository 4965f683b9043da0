//! Prints NVRTC/ptxas register and spill usage of every kernel (needs libnvrtc.so.13 only).
//!
//!   cargo run --example ptxas_report -- [sm_90]
fn main() {
    let arch = std::env::args().nth(1).unwrap_or_else(|| "sm_90".into());
    match gstadabm::cuda::compile(&arch, true) {
        Ok(c) => {
            for k in gstadabm::cuda::parse_ptxas_log(&c.log) {
                println!(
                    "{:<24} {:>4} registers {:>5} B spill stores {:>5} B spill loads",
                    k.name, k.registers, k.spill_stores, k.spill_loads
                );
            }
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
