//! Helpers shared by the benchmarks (`#[path]`-included).

use gstadabm::engine::Model;

/// The value after `name` on the command line.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Writes `name.json` (architecture) and `name.bin` (f32 LE: each conv's OIHW weight, then
/// its bias, in layer order) for the Python baselines (bench/torch_fp16.py, bench/peers/).
pub fn export(dir: &str, name: &str, m: &Model) {
    let cfg = &m.config;
    let convs: Vec<String> = m
        .convs
        .iter()
        .map(|c| {
            format!(
                "{{\"name\":\"{}\",\"cin\":{},\"cout\":{}}}",
                c.spec.name, c.spec.cin, c.spec.cout
            )
        })
        .collect();
    let json = format!(
        "{{\"scale\":{},\"n_resblocks\":{},\"n_feats\":{},\"res_scale\":{},\"rgb_range\":{},\"rgb_mean\":[{},{},{}],\"convs\":[{}]}}",
        cfg.scale,
        cfg.n_resblocks,
        cfg.n_feats,
        cfg.res_scale,
        cfg.rgb_range,
        cfg.rgb_mean[0],
        cfg.rgb_mean[1],
        cfg.rgb_mean[2],
        convs.join(",")
    );
    let mut bin = Vec::new();
    for c in &m.convs {
        for v in c.weight.iter().chain(&c.bias) {
            bin.extend_from_slice(&v.to_le_bytes());
        }
    }
    std::fs::create_dir_all(dir).expect("export dir");
    std::fs::write(format!("{dir}/{name}.json"), json).expect("write json");
    std::fs::write(format!("{dir}/{name}.bin"), bin).expect("write bin");
}
