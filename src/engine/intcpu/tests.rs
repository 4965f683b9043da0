//! Every conv-sum kernel at every level this host supports equals the integer reference
//! (`IntConv::sums`) exactly: odd widths, 1-pixel maps, channel counts that leave tails, 4- and
//! 8-bit weights (centred and offset forms), codes of 1 to 8 bits (both AVX2 variants).

use super::*;
use crate::engine::intconv::CodeMap;
use crate::engine::random::Rng;

fn random_conv(rng: &mut Rng, cin: usize, cout: usize, w_bits: u8) -> IntConv {
    let w: Vec<f32> = (0..cout * cin * 9).map(|_| rng.symmetric(0.5)).collect();
    let b: Vec<f32> = (0..cout).map(|_| rng.symmetric(0.1)).collect();
    IntConv::new(cin, cout, &w, &b, 0.4, w_bits)
}

/// A code map of `cin` channels and its copy with the channel stride rounded up to 4.
fn random_codes(rng: &mut Rng, h: usize, w: usize, cin: usize, bits: u8) -> (CodeMap, Vec<u8>) {
    let cs = cin.div_ceil(4) * 4;
    let mut m = CodeMap {
        h,
        w,
        c: cin,
        codes: vec![0; (h + 2) * (w + 2) * cin],
    };
    let mut padded = vec![0u8; (h + 2) * (w + 2) * cs];
    for y in 1..=h {
        for x in 1..=w {
            for c in 0..cin {
                // Mostly full-range codes, some zeros (skipped groups), some maximal.
                let q = match rng.below(8) {
                    0 => 0,
                    1 => (1u32 << bits) - 1,
                    _ => rng.below(1 << bits) as u32,
                } as u8;
                m.codes[(y * (w + 2) + x) * cin + c] = q;
                padded[(y * (w + 2) + x) * cs + c] = q;
            }
        }
    }
    (m, padded)
}

/// Asserts that `out` holds the reference conv `ic`'s sums of every pixel of output row `y` of
/// `m` (pixel `x`'s at `x · cout8`); `case` names the case in the message.
#[track_caller]
fn assert_row_sums(
    ic: &IntConv,
    m: &CodeMap,
    y: usize,
    out: &[i32],
    cout8: usize,
    case: std::fmt::Arguments,
) {
    let mut want = vec![0i32; ic.cout];
    for x in 0..m.w {
        ic.sums(m, y, x, &mut want);
        assert_eq!(
            &out[x * cout8..x * cout8 + ic.cout],
            &want[..],
            "{case} at ({y},{x})"
        );
    }
}

#[test]
fn kernels_match_the_reference_exactly() {
    let mut rng = Rng::new(99);
    let shapes = [
        (3, 5, 3, 32),
        (1, 1, 64, 64),
        (2, 7, 32, 32),
        (1, 3, 64, 256),
        (4, 9, 64, 3),
        (3, 2, 8, 24),
        (2, 5, 44, 16),
        // Narrow convs (at most 4 lanes with the ones lane) with a partial and with two
        // 64-channel steps per tap.
        (2, 5, 36, 2),
        (2, 6, 100, 3),
    ];
    for &(h, w, cin, cout) in &shapes {
        for w_bits in [4u8, 8] {
            let ic = random_conv(&mut rng, cin, cout, w_bits);
            let pc = PackedConv::new(&ic);
            assert_eq!(pc.offset, w_bits == 8);
            for bits in [1u8, 4, 6, 7, 8] {
                let (m, padded) = random_codes(&mut rng, h, w, cin, bits);
                let codes = Codes {
                    data: &padded,
                    h,
                    w,
                    cstride: pc.cstride,
                    sums: None,
                    defer_offset: false,
                };
                // And with the pixels' code sums made beforehand (the engines' way for 8-bit
                // weights), the row in two column ranges.
                let mut ps = Vec::new();
                let with_sums = codes.with_sums_for(&pc, &mut ps);
                for level in CpuLevel::testable() {
                    for (codes, split) in [(&codes, 0), (&with_sums, w / 2)] {
                        for y in 0..h {
                            let mut out = vec![0i32; w * pc.cout8];
                            let max = (1 << bits) - 1;
                            row_sums(level, codes, &pc, y, max, 0..split, &mut out);
                            row_sums(level, codes, &pc, y, max, split..w, &mut out);
                            assert_row_sums(
                                &ic,
                                &m,
                                y,
                                &out,
                                pc.cout8,
                                format_args!(
                                    "{level:?} {h}x{w} {cin}->{cout} w{w_bits} a{bits}, sums {}",
                                    codes.sums.is_some()
                                ),
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The direct kernels on maps wider than AMX's tiles (16 pixels, 16 lanes, 64-byte steps):
/// two pixel blocks and a lone one, pixel tails of 1 to 15, lane blocks of 8, 16, 24 and 32
/// (one or two per pass, a last pass of 8), kernel-row steps of 12, 44, 48, 60 and 64 bytes,
/// column ranges that start inside a block; and two convs of different shapes alternating
/// row by row in one thread (the AMX kernel keeps its tile configuration between calls and
/// must reload it when the shape changes). Every level this host has, AMX where it is.
#[test]
fn direct_kernels_match_the_reference_on_wide_maps() {
    if !CpuLevel::available().contains(&CpuLevel::Amx) {
        eprintln!(
            "note: direct_kernels_match_the_reference_on_wide_maps runs without the AMX level \
             (this CPU or OS does not offer it)"
        );
    }
    let mut rng = Rng::new(0xa3c);
    let shapes = [
        (2, 49, 64, 64, 4u8, 4u8),
        (2, 33, 32, 40, 4, 6),
        (1, 47, 100, 24, 8, 8),
        (2, 17, 3, 16, 8, 8),
        (1, 31, 44, 8, 4, 3),
        (1, 40, 64, 264, 8, 8),
    ];
    let mut convs = Vec::new();
    for &(h, w, cin, cout, w_bits, bits) in &shapes {
        let ic = random_conv(&mut rng, cin, cout, w_bits);
        let pc = PackedConv::new(&ic);
        let (m, padded) = random_codes(&mut rng, h, w, cin, bits);
        convs.push((ic, pc, m, padded, bits));
    }
    for level in CpuLevel::testable() {
        // Pairs of neighbouring shapes, rows alternating between them.
        for pair in convs.windows(2) {
            let h = pair[0].2.h.max(pair[1].2.h);
            for y in 0..h {
                for (ic, pc, m, padded, bits) in pair {
                    if y >= m.h {
                        continue;
                    }
                    let codes = Codes {
                        data: padded,
                        h: m.h,
                        w: m.w,
                        cstride: pc.cstride,
                        sums: None,
                        defer_offset: false,
                    };
                    let max = (1u32 << bits) - 1;
                    let mut out = vec![0i32; m.w * pc.cout8];
                    let split = 5.min(m.w);
                    row_sums(level, &codes, pc, y, max, 0..split, &mut out);
                    row_sums(level, &codes, pc, y, max, split..m.w, &mut out);
                    assert_row_sums(
                        ic,
                        m,
                        y,
                        &out,
                        pc.cout8,
                        format_args!("{level:?} {}x{} {}->{} a{bits}", m.h, m.w, ic.cin, ic.cout),
                    );
                }
            }
        }
    }
}

#[test]
fn saturation_guard_picks_the_exact_path() {
    let mut rng = Rng::new(5);
    let w4 = PackedConv::new(&random_conv(&mut rng, 8, 8, 4));
    let w8 = PackedConv::new(&random_conv(&mut rng, 8, 8, 8));
    assert!(w4.pairs_fit_i16(255), "4-bit weights never saturate");
    assert!(w8.wabs >= 100);
    assert!(
        !w8.pairs_fit_i16(255),
        "8-bit codes x 8-bit weights may saturate"
    );
    assert!(w8.pairs_fit_i16(63));
}

#[test]
fn level_override_only_lowers() {
    // The override is read by detect(); available() is what the host can run.
    let avail = CpuLevel::available();
    assert_eq!(avail[0], CpuLevel::Scalar);
    assert!(avail.contains(&CpuLevel::detect()));
    assert!(avail.iter().all(|l| l.supported()));
    // The emulation is for tests only: never detected, never "available".
    assert!(!avail.contains(&CpuLevel::EmulatedVnni));
    let t = CpuLevel::testable();
    assert_eq!(
        t.contains(&CpuLevel::EmulatedVnni),
        avail.contains(&CpuLevel::Avx2)
    );
    assert!(
        t.windows(2).all(|p| p[0] < p[1]),
        "sorted, no repeats: {t:?}"
    );
    eprintln!("CPU levels on this host: {avail:?} (tests also run {t:?})");
}

/// The start-up check passes at every VNNI, `sdot` and `usmmla` level this host runs (the emulated
/// ones too), and it is what `supported` requires of those levels: a CPU with the features
/// runs them.
#[test]
fn checked_levels_pass_their_self_check() {
    for level in CpuLevel::testable().into_iter().filter(|l| l.is_checked()) {
        assert!(level.self_check(), "{level:?}");
        assert!(level.supported());
    }
    assert!(CpuLevel::failed_self_checks().is_empty());
    for level in [
        CpuLevel::NeonDot,
        CpuLevel::NeonI8mm,
        CpuLevel::Avx512Vnni,
        CpuLevel::Amx,
    ] {
        assert!(!level.has_features() || CpuLevel::available().contains(&level));
    }
    #[cfg(target_arch = "aarch64")]
    {
        use std::arch::is_aarch64_feature_detected as has;
        assert_eq!(CpuLevel::NeonDot.has_features(), has!("dotprod"));
        assert_eq!(
            CpuLevel::NeonI8mm.has_features(),
            has!("dotprod") && has!("i8mm")
        );
    }
}

/// The i32 Winograd F(2,3) kernel of the VNNI levels gives the reference sums exactly for
/// every code width up to 7 bits (where the i16 AVX2 kernel has no schedule for 6–7 bits),
/// weights of 2–5 bits, odd widths, 1-pixel maps, several chunks of tiles and channel tails.
#[test]
fn winograd_i32_matches_the_reference_exactly() {
    let mut rng = Rng::new(11);
    let shapes = [
        (3, 5, 64, 64),
        (1, 1, 64, 64),
        (2, 7, 32, 40),
        (3, 3, 3, 8),
        (2, 16, 64, 256),
        // Two chunks of tiles (19 tiles, the last group of 3), one 512-bit vector plus a
        // 256-bit block of channels.
        (2, 37, 16, 24),
    ];
    let levels: Vec<_> = CpuLevel::testable()
        .into_iter()
        .filter(|l| l.is_vnni())
        .collect();
    let mut checked = 0;
    for &(h, w, cin, cout) in &shapes {
        for w_bits in [2u8, 4, 5] {
            let ic = random_conv(&mut rng, cin, cout, w_bits);
            let pc = PackedConv::new(&ic);
            assert!(pc.wino.is_some(), "{w_bits}-bit weights fit the transform");
            for bits in 1u8..=7 {
                let max_code = (1u32 << bits) - 1;
                let (m, padded) = random_codes(&mut rng, h, w, cin, bits);
                let codes = Codes {
                    data: &padded,
                    h,
                    w,
                    cstride: pc.cstride,
                    sums: None,
                    defer_offset: false,
                };
                let tl = wino::row_len(w, pc.cstride);
                let mut vt = vec![0u8; (h + 2) * tl];
                for (r, row) in vt.chunks_exact_mut(tl).enumerate() {
                    wino::build_row(CpuLevel::Scalar, &codes, r, max_code, row);
                }
                for &level in &levels {
                    for y in 0..h {
                        let mut out = vec![0i32; w * pc.cout8];
                        let v = wino::WinoInput {
                            rows: [0, 1, 2].map(|k| &vt[(y + k) * tl..(y + k + 1) * tl]),
                            w,
                            cstride: pc.cstride,
                            max_code,
                        };
                        row_sums_wino_i32(level, &v, &pc, 0..w, &mut out);
                        assert_row_sums(
                            &ic,
                            &m,
                            y,
                            &out,
                            pc.cout8,
                            format_args!("{level:?} {h}x{w} {cin}->{cout} w{w_bits} a{bits}"),
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    if levels.is_empty() {
        eprintln!("no AVX2 on this host: the VNNI kernels (emulated or not) were not run");
    } else {
        assert!(checked > 200 * levels.len(), "only {checked} rows checked");
    }
}

/// The emulated `vpdpbusd` is the instruction's arithmetic: u8 × i8 products of the extremes,
/// 4 per lane, added to the accumulator without saturation.
#[cfg(target_arch = "x86_64")]
#[test]
fn emulated_dpbusd_is_exact_at_the_extremes() {
    if !CpuLevel::available().contains(&CpuLevel::Avx2) {
        eprintln!("no AVX2 on this host: skipped");
        return;
    }
    let a: [u8; 32] = std::array::from_fn(|i| [255, 0, 1, 128, 255, 254, 127, 255][i % 8]);
    let b: [i8; 32] =
        std::array::from_fn(|i| [-128, 127, -1, 127, -128, -128, 1, -128][(i * 3) % 8]);
    let acc: [i32; 8] = std::array::from_fn(|i| [i32::MAX - 200_000, -5, 0, 7][i % 4]);
    // SAFETY: AVX2 checked above.
    let got = unsafe { vnni::dp_emulated(acc, a, b) };
    for lane in 0..8 {
        let mut want = acc[lane];
        for j in 0..4 {
            want = want.wrapping_add(a[4 * lane + j] as i32 * b[4 * lane + j] as i32);
        }
        assert_eq!(got[lane], want, "lane {lane}");
    }
}

/// The Winograd kernel gives the reference sums exactly wherever it claims to be exact: odd
/// widths (the last tile's second pixel is past the row), 1-pixel maps, channel tails, weights
/// of 2–5 bits, codes of 1–7 bits; and it does claim that for 4-bit weights and codes.
#[test]
fn winograd_matches_the_reference_exactly() {
    let mut rng = Rng::new(7);
    let shapes = [
        (3, 5, 64, 64),
        (1, 1, 64, 64),
        (2, 2, 32, 32),
        (4, 7, 8, 24),
        (2, 16, 64, 64),
        (3, 3, 3, 8),
    ];
    let mut checked = 0;
    for &(h, w, cin, cout) in &shapes {
        for w_bits in [2u8, 3, 4, 5] {
            let ic = random_conv(&mut rng, cin, cout, w_bits);
            let pc = PackedConv::new(&ic);
            assert!(pc.wino.is_some(), "{w_bits}-bit weights fit the transform");
            for bits in 1u8..=7 {
                let max_code = (1u32 << bits) - 1;
                if w_bits == 4 && bits <= 5 {
                    assert!(pc.wino_schedule(max_code).is_some(), "w4 a{bits} is exact");
                }
                let Some(sched) = pc.wino_schedule(max_code) else {
                    continue;
                };
                let (m, padded) = random_codes(&mut rng, h, w, cin, bits);
                let codes = Codes {
                    data: &padded,
                    h,
                    w,
                    cstride: pc.cstride,
                    sums: None,
                    defer_offset: false,
                };
                let tl = wino::row_len(w, pc.cstride);
                let mut vt = vec![0u8; (h + 2) * tl];
                for (r, row) in vt.chunks_exact_mut(tl).enumerate() {
                    wino::build_row(CpuLevel::Scalar, &codes, r, max_code, row);
                }
                let rows: Vec<&[u8]> = vt.chunks_exact(tl).collect();
                // The levels with the F(2,3) kernels (AVX2 and up).
                for level in CpuLevel::available() {
                    if level < CpuLevel::Avx2 {
                        continue;
                    }
                    for y in 0..h {
                        let mut out = vec![0i32; w * pc.cout8];
                        let v = wino::WinoInput {
                            rows: [rows[y], rows[y + 1], rows[y + 2]],
                            w,
                            cstride: pc.cstride,
                            max_code,
                        };
                        row_sums_wino(level, &v, &pc, &sched, 0..w, &mut out);
                        assert_row_sums(
                            &ic,
                            &m,
                            y,
                            &out,
                            pc.cout8,
                            format_args!("{level:?} {h}x{w} {cin}->{cout} w{w_bits} a{bits}"),
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    if CpuLevel::available().contains(&CpuLevel::Avx2) {
        assert!(checked > 100, "only {checked} rows checked");
    } else {
        eprintln!("no AVX2 on this host: the Winograd kernel was not run");
    }
}

#[test]
fn winograd_refuses_what_it_cannot_do_exactly() {
    let mut rng = Rng::new(8);
    // 8-bit weights are stored in offset form: no transform.
    assert!(
        PackedConv::new(&random_conv(&mut rng, 8, 8, 8))
            .wino
            .is_none()
    );
    let pc = PackedConv::new(&random_conv(&mut rng, 64, 64, 4));
    // 8-bit codes: V would need 9 bits.
    assert!(pc.wino_schedule(255).is_none());
    let s15 = pc.wino_schedule(15).unwrap();
    // Fewer widenings for smaller codes; one at least after each element's last group.
    let s63 = pc.wino_schedule(63).unwrap();
    let count = |s: &wino::Schedule| s.flush.iter().filter(|&&f| f != 0).count();
    assert!(count(&s15) >= 4 && count(&s15) < count(&s63));
    // A schedule only fits the conv and codes it was made for.
    let other = PackedConv::new(&random_conv(&mut rng, 64, 64, 4));
    assert!(!s15.is_for(other.wino.as_ref().unwrap()));
    assert!(s15.is_for(pc.wino.as_ref().unwrap()));
}

/// The i16 Winograd kernel gives the reference sums exactly for any codes and weights,
/// offset-form 8-bit weights included.
#[test]
fn winograd16_matches_the_reference_exactly() {
    let mut rng = Rng::new(9);
    let shapes = [
        (3, 5, 64, 64),
        (1, 1, 64, 256),
        (2, 2, 32, 32),
        (4, 7, 64, 3),
        (2, 9, 8, 24),
        (3, 3, 3, 8),
    ];
    let mut checked = 0;
    for &(h, w, cin, cout) in &shapes {
        for w_bits in [4u8, 8] {
            let ic = random_conv(&mut rng, cin, cout, w_bits);
            let pc = PackedConv::new(&ic);
            assert!(pc.wino16.is_some());
            for bits in [1u8, 6, 8] {
                let (m, padded) = random_codes(&mut rng, h, w, cin, bits);
                let codes = Codes {
                    data: &padded,
                    h,
                    w,
                    cstride: pc.cstride,
                    sums: None,
                    defer_offset: false,
                };
                let tl = wino::row_len(w, pc.cstride);
                let mut vt = vec![0i16; (h + 2) * tl];
                for (r, row) in vt.chunks_exact_mut(tl).enumerate() {
                    wino::build_row16(CpuLevel::Scalar, &codes, r, row);
                }
                let rows: Vec<&[i16]> = vt.chunks_exact(tl).collect();
                // The levels with the F(2,3) kernels (AVX2 and up).
                for level in CpuLevel::available() {
                    if level < CpuLevel::Avx2 {
                        continue;
                    }
                    for y in 0..h {
                        let mut out = vec![0i32; w * pc.cout8];
                        let v = wino::WinoInput16 {
                            rows: [rows[y], rows[y + 1], rows[y + 2]],
                            w,
                            cstride: pc.cstride,
                        };
                        row_sums_wino16(level, &v, &codes, &pc, y, 0..w, &mut out);
                        assert_row_sums(
                            &ic,
                            &m,
                            y,
                            &out,
                            pc.cout8,
                            format_args!("{level:?} {h}x{w} {cin}->{cout} w{w_bits} a{bits}"),
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    if CpuLevel::available().contains(&CpuLevel::Avx2) {
        assert!(checked > 50, "only {checked} rows checked");
    }
}

/// Computing a row in chunks of columns gives the whole row's sums (every kernel: direct
/// with both AVX2 variants and VNNI, Winograd u8 (i16 and i32 sums) and i16, with
/// offset-form weights).
#[test]
fn column_chunks_give_the_whole_row() {
    let mut rng = Rng::new(10);
    let (h, w, cin, cout) = (3, 37, 64, 64);
    for (w_bits, bits) in [(4u8, 4u8), (8, 8), (8, 6)] {
        let ic = random_conv(&mut rng, cin, cout, w_bits);
        let pc = PackedConv::new(&ic);
        let (_, padded) = random_codes(&mut rng, h, w, cin, bits);
        let codes = Codes {
            data: &padded,
            h,
            w,
            cstride: pc.cstride,
            sums: None,
            defer_offset: false,
        };
        let max_code = (1u32 << bits) - 1;
        let tl = wino::row_len(w, pc.cstride);
        let mut v8 = vec![0u8; (h + 2) * tl];
        let mut v16 = vec![0i16; (h + 2) * tl];
        for r in 0..h + 2 {
            if pc.wino_schedule(max_code).is_some() {
                wino::build_row(
                    CpuLevel::Scalar,
                    &codes,
                    r,
                    max_code,
                    &mut v8[r * tl..(r + 1) * tl],
                );
            }
            wino::build_row16(CpuLevel::Scalar, &codes, r, &mut v16[r * tl..(r + 1) * tl]);
        }
        for level in CpuLevel::testable() {
            for y in 0..h {
                let rows8 = [0, 1, 2].map(|k| &v8[(y + k) * tl..(y + k + 1) * tl]);
                let rows16 = [0, 1, 2].map(|k| &v16[(y + k) * tl..(y + k + 1) * tl]);
                let run = |cols: std::ops::Range<usize>, out: &mut Vec<i32>, kind: usize| match kind
                {
                    0 => row_sums(level, &codes, &pc, y, max_code, cols, out),
                    1 => {
                        let sched = pc.wino_schedule(max_code).unwrap();
                        let v = wino::WinoInput {
                            rows: rows8,
                            w,
                            cstride: pc.cstride,
                            max_code,
                        };
                        row_sums_wino(level, &v, &pc, &sched, cols, out)
                    }
                    3 => {
                        let v = wino::WinoInput {
                            rows: rows8,
                            w,
                            cstride: pc.cstride,
                            max_code,
                        };
                        row_sums_wino_i32(level, &v, &pc, cols, out)
                    }
                    _ => {
                        let v = wino::WinoInput16 {
                            rows: rows16,
                            w,
                            cstride: pc.cstride,
                        };
                        row_sums_wino16(level, &v, &codes, &pc, y, cols, out)
                    }
                };
                let mut kinds = vec![0];
                if level >= CpuLevel::Avx2 {
                    kinds.push(2);
                    if pc.wino_schedule(max_code).is_some() {
                        kinds.push(1);
                        if level.is_vnni() {
                            kinds.push(3);
                        }
                    }
                }
                for kind in kinds {
                    let mut whole = vec![0i32; w * pc.cout8];
                    run(0..w, &mut whole, kind);
                    let mut parts = vec![-1i32; w * pc.cout8];
                    for x0 in (0..w).step_by(6) {
                        run(x0..(x0 + 6).min(w), &mut parts, kind);
                    }
                    assert_eq!(
                        parts, whole,
                        "{level:?} kernel {kind} w{w_bits} a{bits} row {y}"
                    );
                }
            }
        }
    }
}

/// The F(2x2, 3x3) kernels (i32 sums: AVX-512 VNNI and its emulation) give the reference sums
/// of both rows exactly: odd heights (the last pair has no second row) and widths, 1-pixel
/// maps, channel tails, weights of 2–4 bits (all of which fit the transform), codes of 1–6
/// bits, tiles built and summed in chunks and whole rows.
#[test]
fn winograd2_matches_the_reference_exactly() {
    let mut rng = Rng::new(11);
    let shapes = [
        (3, 5, 64, 64),
        (1, 1, 64, 64),
        (2, 2, 32, 32),
        (5, 7, 8, 24),
        (2, 37, 64, 64),
        (3, 3, 3, 8),
    ];
    let mut checked = 0;
    for &(h, w, cin, cout) in &shapes {
        for w_bits in [2u8, 3, 4] {
            let ic = random_conv(&mut rng, cin, cout, w_bits);
            let pc = PackedConv::new(&ic);
            assert!(
                pc.wino2().is_some(),
                "{w_bits}-bit weights fit the transform"
            );
            for bits in 1u8..=6 {
                let max_code = (1u32 << bits) - 1;
                let kernels: Vec<CpuLevel> = CpuLevel::testable()
                    .into_iter()
                    .filter(|&l| has_wino2_i32(l))
                    .collect();
                let (m, padded) = random_codes(&mut rng, h, w, cin, bits);
                let codes = Codes {
                    data: &padded,
                    h,
                    w,
                    cstride: pc.cstride,
                    sums: None,
                    defer_offset: false,
                };
                if !CpuLevel::available().contains(&CpuLevel::Avx2) {
                    continue;
                }
                // Chunks of 6 tiles (the kernels take 4 tiles per call), each built on its
                // own, and whole rows (where the 512-bit kernel takes 8 tiles at a time).
                for (kernel, y, chunk) in kernels.iter().flat_map(|&k| {
                    (0..h)
                        .step_by(2)
                        .flat_map(move |y| [(k, y, 6), (k, y, w.div_ceil(2))])
                }) {
                    let mut out = vec![-1i32; 2 * w * pc.cout8];
                    for t0 in (0..w.div_ceil(2)).step_by(chunk) {
                        let t1 = (t0 + chunk).min(w.div_ceil(2));
                        let mut data = vec![0u8; wino::tiles2_len(t1 - t0, pc.cstride)];
                        wino::build_tiles2(
                            CpuLevel::Scalar,
                            &codes,
                            y,
                            t0..t1,
                            max_code,
                            &mut data,
                        );
                        let v = wino::Wino2Input {
                            data: &data,
                            t0,
                            tiles: t1 - t0,
                            w,
                            cstride: pc.cstride,
                            max_code,
                        };
                        let cols = 2 * t0..(2 * t1).min(w);
                        row_sums_wino2_i32(kernel, &v, &pc, cols, &mut out);
                    }
                    for r in 0..2.min(h - y) {
                        assert_row_sums(
                            &ic,
                            &m,
                            y + r,
                            &out[r * w * pc.cout8..],
                            pc.cout8,
                            format_args!("{kernel:?} {h}x{w} {cin}->{cout} w{w_bits} a{bits}"),
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    if CpuLevel::available().contains(&CpuLevel::Avx2) {
        assert!(checked > 100, "only {checked} rows checked");
    } else {
        eprintln!("no AVX2 on this host: the F(2x2, 3x3) kernel was not run");
    }
}

/// The input transforms (compiled per level: AVX-512 BW, AVX2, plain) against their
/// definitions at every level, for channel strides that are and are not multiples of the
/// vector widths, 1-pixel maps, odd widths and tile ranges that start inside the row or end
/// at its last (half) tile.
#[test]
fn input_transforms_match_their_definition_at_every_level() {
    const BT: [[i32; 4]; 4] = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]];
    let mut rng = Rng::new(23);
    for &(h, w, cin) in &[(1, 1, 3), (2, 7, 36), (3, 33, 64), (2, 16, 68), (1, 5, 256)] {
        for bits in [1u8, 4, 6, 7, 8] {
            let (_, padded) = random_codes(&mut rng, h, w, cin, bits);
            let cs = cin.div_ceil(4) * 4;
            let codes = Codes {
                data: &padded,
                h,
                w,
                cstride: cs,
                sums: None,
                defer_offset: false,
            };
            let q = (1i32 << bits) - 1;
            // Padded code (0 past the padded map), as i32.
            let d = |r: usize, x: usize, c: usize| -> i32 {
                if r < h + 2 && x < w + 2 {
                    padded[(r * (w + 2) + x) * cs + c] as i32
                } else {
                    0
                }
            };
            let tl = wino::row_len(w, cs);
            let tiles = w.div_ceil(2);
            let ranges = [0..tiles, tiles / 2..tiles, 0..tiles.div_ceil(2)];
            for &level in &CpuLevel::testable() {
                for r in 0..h + 2 {
                    let (mut v8, mut v16) = (vec![1u8; tl], vec![1i16; tl]);
                    if bits <= 7 {
                        wino::build_row(level, &codes, r, q as u32, &mut v8);
                    }
                    wino::build_row16(level, &codes, r, &mut v16);
                    for (i, (&v8, &v16)) in v8.iter().zip(&v16).enumerate() {
                        let (t, e, c) = (i / (4 * cs), i / cs % 4, i % cs);
                        let v: i32 = (0..4).map(|k| BT[e][k] * d(r, 2 * t + k, c)).sum();
                        let off = if e == 1 { 0 } else { q };
                        assert_eq!(v16 as i32, v, "build_row16 {level:?} {h}x{w}x{cin} {i}");
                        if bits <= 7 {
                            assert_eq!(v8 as i32, v + off, "build_row {level:?} {h}x{w}x{cin}");
                        }
                    }
                }
                for y in (0..h).filter(|_| bits <= 6) {
                    for ts in ranges.iter().filter(|t| !t.is_empty()) {
                        let mut got = vec![1u8; wino::tiles2_len(ts.len(), cs)];
                        wino::build_tiles2(level, &codes, y, ts.clone(), q as u32, &mut got);
                        for (i, &g) in got.iter().enumerate() {
                            let (t, e, c) = (ts.start + i / (16 * cs), i / cs % 16, i % cs);
                            let (ey, ex) = (e / 4, e % 4);
                            let mut v = if e == 5 { 0 } else { 2 * q };
                            for (ry, by) in BT[ey].iter().enumerate() {
                                for (rx, bx) in BT[ex].iter().enumerate() {
                                    v += by * bx * d(y + ry, 2 * t + rx, c);
                                }
                            }
                            assert_eq!(
                                g as i32, v,
                                "build_tiles2 {level:?} {h}x{w}x{cin} {bits} bits y {y} {ts:?} {i}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn winograd2_refuses_what_it_cannot_do_exactly() {
    let mut rng = Rng::new(12);
    assert!(
        PackedConv::new(&random_conv(&mut rng, 8, 8, 8))
            .wino2()
            .is_none()
    );
    assert!(
        PackedConv::new(&random_conv(&mut rng, 64, 64, 4))
            .wino2()
            .is_some()
    );
}

/// Every SIMD intrinsic the kernels use is inlined into them: none is left as a function of its
/// own in this binary. An intrinsic called from code compiled without the entry point's
/// `#[target_feature]`s (a closure's body in a generic `#[inline(always)]` function, say)
/// cannot be inlined and becomes a call per instruction — the VNNI Winograd kernel ran 35x
/// slower than its direct kernel that way until session 10, with every exactness test green.
#[test]
fn simd_intrinsics_are_inlined_into_the_kernels() {
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = match std::process::Command::new("nm").arg(&exe).output() {
        Ok(o) if o.status.success() => o,
        _ => {
            eprintln!(
                "SKIP simd_intrinsics_are_inlined_into_the_kernels: `nm` (binutils) is not available"
            );
            return;
        }
    };
    let symbols = String::from_utf8_lossy(&out.stdout);
    // Mangled (legacy or v0) paths of `core::core_arch::x86{,_64}::*::_mm*` functions.
    let outlined: Vec<&str> = symbols
        .lines()
        .filter(|l| l.contains("core_arch") && l.contains("_mm"))
        .collect();
    assert!(
        outlined.is_empty(),
        "{} SIMD intrinsics compiled out of line (a kernel calls them instead of inlining \
         them: code without the entry point's target features), e.g.:\n{}",
        outlined.len(),
        outlined[..outlined.len().min(5)].join("\n")
    );
}

/// Winograd F(4x4, 3x3) on i16 ([`wino4`]) equals the reference exactly: 4- and 8-bit weights
/// (centred and offset forms, with and without the ones lane), codes of 1 to 8 bits, heights
/// and widths that are not multiples of 4, column chunks that start and end inside the row,
/// 1-pixel maps, and the extreme sums (all codes 255 against all weights −128: the kernel's
/// sum is −18.8 M, the modular recovery's range ends at 2^25 ≈ 33.6 M).
#[test]
fn winograd4_matches_the_reference_exactly() {
    let levels: Vec<_> = CpuLevel::available()
        .into_iter()
        .filter(|&l| has_wino4(l))
        .collect();
    if levels.is_empty() {
        eprintln!("no AVX2 on this host: the F(4x4, 3x3) kernels were not run");
        return;
    }
    for level in levels {
        winograd4_at(level);
    }
}

fn winograd4_at(level: CpuLevel) {
    let mut rng = Rng::new(41);
    let mut checked = 0;
    let check = |ic: &IntConv, m: &CodeMap, padded: &[u8], h: usize, w: usize, what: &str| {
        let pc = PackedConv::new(ic);
        assert!(pc.wino4().is_some(), "{what}: the conv fits the kernel");
        let codes = Codes {
            data: padded,
            h,
            w,
            cstride: pc.cstride,
            sums: None,
            defer_offset: false,
        };
        // The chunked runs with the pixels' code sums made beforehand (the engines' way).
        let mut ps = Vec::new();
        let with_sums = codes.with_sums_for(&pc, &mut ps);
        let mut tiles = Vec::new();
        let mut rows = 0;
        for chunk in [w, 8, 6] {
            let codes = if chunk == w { &codes } else { &with_sums };
            for y0 in (0..h).step_by(4) {
                let mut out = vec![-1i32; 4 * w * pc.cout8];
                for x0 in (0..w).step_by(chunk) {
                    let cols = x0..(x0 + chunk).min(w);
                    row_sums_wino4(level, codes, &pc, y0, cols, &mut tiles, &mut out);
                }
                for r in 0..4.min(h - y0) {
                    assert_row_sums(
                        ic,
                        m,
                        y0 + r,
                        &out[r * w * pc.cout8..],
                        pc.cout8,
                        format_args!("{level:?} {what}: chunk {chunk}"),
                    );
                    rows += 1;
                }
            }
        }
        rows
    };
    for &(h, w, cin, cout) in &[
        (5, 9, 64, 64),
        (1, 1, 64, 64),
        (4, 8, 32, 256),
        (3, 6, 64, 48),
        (7, 13, 64, 60),
        (2, 17, 32, 16),
    ] {
        for w_bits in [4u8, 8] {
            let ic = random_conv(&mut rng, cin, cout, w_bits);
            for bits in [1u8, 4, 6, 8] {
                let (m, padded) = random_codes(&mut rng, h, w, cin, bits);
                let what = format!("{h}x{w} {cin}->{cout} w{w_bits} a{bits}");
                checked += check(&ic, &m, &padded, h, w, &what);
            }
        }
    }
    // The extremes: every code 255, every weight code 0 (−128 in the offset form).
    let (h, w, cin, cout) = (6, 7, 64, 32);
    let ic = IntConv::new(
        cin,
        cout,
        &vec![-1.0; cout * cin * 9],
        &vec![0.0; cout],
        0.4,
        8,
    );
    let mut m = CodeMap {
        h,
        w,
        c: cin,
        codes: vec![0; (h + 2) * (w + 2) * cin],
    };
    for y in 1..=h {
        for x in 1..=w {
            m.codes[(y * (w + 2) + x) * cin..][..cin].fill(255);
        }
    }
    let padded = m.codes.clone();
    let mut want = vec![0i32; cout];
    ic.sums(&m, 2, 3, &mut want);
    let pc = PackedConv::new(&ic);
    assert_eq!(pc.wabs, 128, "weights at the offset form's extreme");
    // S = 2·Σ q·(k − 128) + Σ q: the kernel's own sum is Σ q·(k − 128) = −255·128·576.
    assert_eq!(
        want[0],
        -(255 * 255 * 9 * 64),
        "interior sum at the extreme"
    );
    checked += check(&ic, &m, &padded, h, w, "extremes");
    assert!(checked > 100, "{level:?}: only {checked} rows checked");
}

/// F(4x4, 3x3) refuses the convs it cannot do exactly or efficiently: channel strides not a
/// multiple of 32, output lanes not a multiple of 16, and 8-bit convs of 128 input channels
/// (sums could reach 2^25).
#[test]
fn winograd4_refuses_what_it_cannot_do() {
    let mut rng = Rng::new(43);
    for &(cin, cout, w_bits, fits) in &[
        (64, 64, 8, true),
        (3, 64, 8, false),
        (36, 64, 8, false),
        (64, 3, 8, false),
        (64, 24, 8, false),
        (128, 64, 8, false),
        (128, 64, 4, true),
    ] {
        let pc = PackedConv::new(&random_conv(&mut rng, cin, cout, w_bits));
        assert_eq!(pc.wino4().is_some(), fits, "{cin}->{cout} w{w_bits}");
    }
}

/// The start-up choice between the direct kernel and F(4x4, 3x3) for 8-bit convs: made once
/// per level and shape (a conv keeps its kernel for the life of the process), only at the
/// real VNNI levels, never for a conv F(4x4) does not fit.
#[test]
fn the_kernel_probe_decides_once_and_only_where_it_may() {
    let mut rng = Rng::new(31);
    let body = PackedConv::new(&random_conv(&mut rng, 64, 64, 8));
    let tail = PackedConv::new(&random_conv(&mut rng, 64, 3, 8));
    assert!(body.wino4().is_some() && tail.wino4().is_none());
    for level in CpuLevel::testable() {
        let first = direct_beats_wino4(level, &body);
        for _ in 0..3 {
            assert_eq!(direct_beats_wino4(level, &body), first, "{level:?}");
        }
        if !matches!(level, CpuLevel::AvxVnni | CpuLevel::Avx512Vnni) {
            assert!(!first, "{level:?} probed");
        }
        assert!(!direct_beats_wino4(level, &tail), "{level:?}: the tail");
        // `wino4_for` follows the probe.
        let tiles = has_wino4(level) && winograd_for(level) >= Winograd::Tiles;
        assert_eq!(wino4_for(level, &body), tiles && !first, "{level:?}");
    }
}

#[test]
fn aligned_buffers_start_on_a_line_and_keep_their_contents() {
    fn check<T: Plain + PartialEq + std::fmt::Debug>(one: T, zero: T) {
        let mut b = Aligned::<T>::new();
        assert!(b.is_empty());
        for n in [1, 15, 16, 17, 63, 64, 65, 4097, 3] {
            b.resize(n);
            assert_eq!(b.len(), n);
            assert_eq!(b.as_ptr() as usize % 64, 0, "{n} elements");
            b[n - 1] = one;
        }
        // Growing keeps what was written and adds zeros; `zeroed` clears everything.
        b.resize(5000);
        assert_eq!((b[2], b[3], b[14], b[4999]), (one, zero, zero, zero));
        for n in [70, 9000, 3, 20] {
            b.zeroed(n);
            assert!(b.len() == n && b.iter().all(|&v| v == zero));
            assert_eq!(b.as_ptr() as usize % 64, 0);
            b[n - 1] = one;
        }
    }
    check(7u8, 0);
    check(-7i16, 0);
    check(-7i32, 0);
    check(0.5f32, 0.0);
}
