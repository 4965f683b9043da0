//! The fully integer network (fq models) on the CPU kernels, with the epilogues fused: each
//! conv writes the next layer's codes directly (and the f32 residual stream where the network
//! needs it), so no f32 feature map is re-read to be quantized. Buffers are kept between
//! frames of the same size. Bit-identical to [`IntNetwork`](crate::engine::intnet::IntNetwork).

use std::cell::RefCell;
use std::ops::Range;
use std::sync::Mutex;

use rayon::prelude::*;

use super::engine::quantize_into;
use super::epilogue::{self, Consts, Op, Pixel, Span};
use super::wino::{self, Wino2Input, WinoInput, WinoInput16};
use super::{
    Aligned, Codes, CpuLevel, Hint, PackedConv, Plain, Winograd, has_wino2_i32, row_sums_hinted,
    row_sums_wino, row_sums_wino_i32, row_sums_wino2_i32, row_sums_wino4, row_sums_wino16,
};
use crate::engine::conv::FeatureMap;
use crate::engine::edsr::BitPlan;
use crate::engine::intconv::ActQuant;
use crate::engine::intnet::{IntConv, IntLayer, IntNetwork};
use crate::engine::model::Role;

/// What a conv's epilogue does with its values `v`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Epi {
    /// Head: `head = res = v`, codes of `v`.
    Head,
    /// Block conv1: codes of `max(v, 0)`.
    Relu,
    /// Block conv2: `res = res + res_scale·v`, codes of `res`.
    Res,
    /// Last body conv: codes of `v + head`.
    Skip,
    /// Upsampler: codes of `v` at the PixelShuffle(r) positions.
    Shuffle(usize),
    /// Tail: `v` into the output map.
    Out,
}

/// Per-frame-size buffers.
#[derive(Default)]
struct Buffers {
    h: usize,
    w: usize,
    input: Aligned<u8>,
    a: Aligned<u8>,
    b: Aligned<u8>,
    head: Aligned<f32>,
    res: Aligned<f32>,
    hr: Vec<Aligned<u8>>,
    /// The running conv's `l·K` table ([`epilogue::l_times_k`]), on cache lines (the
    /// epilogue reads it by the vector, every pixel).
    lk: Aligned<f32>,
    /// The running conv's input pixels' code sums ([`super::pixel_sums`], 8-bit weights).
    psums: Vec<i32>,
    /// The body schedule's state: per conv of a group, its output rows per task and its
    /// rows done.
    progress: Vec<(usize, usize)>,
}

/// The fused integer path of an fq [`IntNetwork`] running on the kernels: what each layer's
/// epilogue does, and the buffers. Convs, packed weights and the SIMD level are the network's.
pub struct FusedNet {
    epis: Vec<Epi>,
    /// Per layer, for the upsamplers: the conv with its outputs in sub-pixel-major order
    /// (`(i·r + j)·c + ch` instead of PixelShuffle's `ch·r² + i·r + j`), so that each HR row
    /// of a pixel's codes is one contiguous run of `r·c` bytes.
    shuffled: Vec<Option<(IntConv, PackedConv)>>,
    /// Buffer sets not in use: a frame takes one (or makes one) and gives it back, so frames
    /// run at once on one engine each have their own. The lock is never held while a frame
    /// runs: a rayon worker waiting in a frame's parallel work can pick up another frame's job,
    /// and a lock held across that work deadlocks the two.
    bufs: Mutex<Vec<Buffers>>,
}

/// Largest conv width the fused path handles (x3 upsampler of 64 features: 576).
const MAX_COUT: usize = 1024;

/// The epilogue of pixels `cols` of row `r` of a task's rows, given their sums `S` (those of
/// the first pixel at the start of the slice, `cout8` apart) and their window code sums
/// (empty unless the epilogue applies the offset correction, [`Span::sq`]).
type RunFn<'a> = dyn FnMut(usize, Range<usize>, &[i32], &[i32]) + 'a;

/// What the epilogue of pixels `cols` of row `r` of a task's rows will read, to prefetch.
type HintFn<'a> = dyn Fn(usize, Range<usize>) -> Hint + 'a;

/// The pixels `cols` of output row `y` of an `h x w` map of the conv `pc`, with their sums
/// `s` (`pc.cout8` apart), their window code sums `sq` (empty unless the epilogue applies
/// the offset correction, [`Span::sq`]) and the conv's `l·K` table `lk`.
#[allow(clippy::too_many_arguments)]
fn span_of<'a>(
    pc: &super::PackedConv,
    y: usize,
    h: usize,
    w: usize,
    cols: Range<usize>,
    s: &'a [i32],
    sq: &'a [i32],
    lk: &'a [f32],
) -> Span<'a> {
    let by = crate::engine::intnet::border_bits(y, h);
    Span {
        x0: cols.start,
        count: cols.len(),
        w,
        s,
        sstride: pc.cout8,
        lk: std::array::from_fn(|bx| &lk[(by * 4 + bx) * pc.cout..][..pc.cout]),
        sq,
    }
}

/// Output pixels per chunk of a row at `level` (even: Winograd tiles are pairs of pixels): a
/// chunk's sums are computed, then its epilogue run while they are in cache. At AMX 128: the
/// kernel reads a block of 32 output lanes' weight tiles (18 KB for a 64-channel conv) once
/// per chunk: frames 1.05–1.13x against 32-pixel chunks (BENCHMARKS.md, session 38);
/// elsewhere 32.
fn col_chunk(level: CpuLevel) -> usize {
    match (CHUNK.load(std::sync::atomic::Ordering::Relaxed), level) {
        (0, CpuLevel::Amx) => MAX_COL_CHUNK,
        (0, _) => 32,
        (n, _) => n,
    }
}

/// [`set_col_chunk`]'s value (0: the default).
static CHUNK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Sets the fused engine's pixels per chunk of a row for the whole process (for comparisons
/// and tests): `n` rounded down to an even number in `2 ..= 128`. `None`: the default again
/// (128 at AMX, else 32).
pub fn set_col_chunk(n: Option<usize>) {
    let v = n.map_or(0, |n| n.clamp(2, MAX_COL_CHUNK) / 2 * 2);
    CHUNK.store(v, std::sync::atomic::Ordering::Relaxed);
}

/// The largest [`col_chunk`].
const MAX_COL_CHUNK: usize = 128;

/// How a conv runs on a frame (its codes' bound `max_code`): the kernel form, and the output
/// rows one task computes.
struct Form {
    tiles2: bool,
    tiles4: bool,
    rows_i32: bool,
    sched: Option<wino::Schedule>,
    use16: bool,
    /// Output rows per task: F(2x2, 3x3) computes rows in pairs, F(4x4, 3x3) in fours.
    rows: usize,
}

impl Form {
    fn of(level: CpuLevel, pc: &PackedConv, max_code: u32) -> Self {
        // In the chosen mode: Winograd F(2x2, 3x3) where it is exact (small weights and codes;
        // i32 sums at AVX-512 VNNI), else F(2,3) along x, else its i16 form for layers too wide for vpmaddubsw (8-bit codes and
        // weights), else direct. At VNNI levels F(2,3) has i32 sums (exact up to 7-bit codes,
        // no schedule) and the direct kernel takes any codes and weights at 4 products per
        // instruction, so the i16 form is not used.
        let vnni = level.is_vnni();
        let mode = if level >= CpuLevel::Avx2 {
            super::winograd_for(level)
        } else {
            Winograd::Off
        };
        // F(2x2, 3x3) with i32 sums at AVX-512 VNNI (codes up to 6 bits); else F(4x4, 3x3) on
        // i16 for the convs it fits — at AVX-512 VNNI those no u8 transform is exact for:
        // 8-bit weights or codes (fq upsamplers, w8a6 bodies), at AVX2 all of them (2.25
        // multiplies per output against F(2,3)'s 6), at AVX-VNNI (and its emulation) those
        // F(2,3) on u8 with i32 sums is not exact for (8-bit weights or codes).
        let tiles2 = mode >= Winograd::Tiles
            && has_wino2_i32(level)
            && max_code <= 63
            && pc.wino2().is_some();
        let u8_rows_fit = pc.wino.is_some() && max_code <= 127;
        let avx_vnni = matches!(level, CpuLevel::AvxVnni | CpuLevel::EmulatedVnni);
        let tiles4 = !tiles2 && super::wino4_for(level, pc) && !(avx_vnni && u8_rows_fit);
        let rows_i32 = vnni && !tiles2 && mode >= Winograd::Rows && u8_rows_fit;
        let sched = (!vnni && !tiles2 && mode >= Winograd::Rows)
            .then(|| pc.wino_schedule(max_code))
            .flatten();
        // (Not for narrow convs such as the tail: with 8 output lanes for 3 channels the direct
        // kernel's 4 pixels per weight load do better.)
        let use16 = !vnni
            && mode >= Winograd::Rows
            && !tiles2
            && sched.is_none()
            && !pc.pairs_fit_i16(max_code)
            && pc.cout8 >= 32
            && pc.wino16.is_some();
        // Output rows per task: F(2x2, 3x3) computes rows in pairs, F(4x4, 3x3) in fours.
        let rows = if tiles4 {
            4
        } else if tiles2 {
            2
        } else {
            1
        };
        Self {
            tiles2,
            tiles4,
            rows_i32,
            sched,
            use16,
            rows,
        }
    }
}

/// Rows per band of the first conv of a group of the body, by default on one thread
/// ([`set_bands`]).
const BAND: usize = 16;
/// Convs per group of the body, by default on one thread: all of them (EDSR-baseline's 34).
const GROUP: usize = 64;

/// [`set_bands`]' values (0: the default).
static BANDS: [std::sync::atomic::AtomicUsize; 2] = [
    std::sync::atomic::AtomicUsize::new(0),
    std::sync::atomic::AtomicUsize::new(0),
];

/// Sets the fused engine's body schedule for the whole process (for comparisons and tests):
/// bands of `band` rows (rounded down to a multiple of 4, at least 4; a band as tall as the
/// frame is the layer-by-layer order) through groups of `group` convs. `None`: the default
/// again — bands of 16 rows through the whole body on one thread, layer by layer on more
/// (BENCHMARKS.md, "Row bands through the body": on two threads each band's conv is a parallel
/// step of its own, and the steps' joins cost what the cache saves).
pub fn set_bands(bands: Option<(usize, usize)>) {
    let (band, group) = bands.map_or((0, 0), |(b, g)| (b.max(4) / 4 * 4, g.max(1)));
    BANDS[0].store(band, std::sync::atomic::Ordering::Relaxed);
    BANDS[1].store(group, std::sync::atomic::Ordering::Relaxed);
}

/// Rows per band of the first conv of a group of the body, and convs per group, for a frame
/// of `h` rows on the current thread pool.
fn band_and_group(h: usize) -> (usize, usize) {
    use std::sync::atomic::Ordering::Relaxed;
    match (BANDS[0].load(Relaxed), BANDS[1].load(Relaxed)) {
        (0, _) if rayon::current_num_threads() > 1 => (h, 1),
        (0, _) => (BAND, GROUP),
        bands => bands,
    }
}

/// Numbers the conv calls, so that a thread's cached transformed rows are never taken for
/// another call's.
static NEXT_CALL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The three transformed rows ([`super::wino`]) an output row reads, in slots `r % 3`.
#[derive(Default)]
struct WinoRows<T: Plain> {
    call: u64,
    rows: [Option<usize>; 3],
    data: [Aligned<T>; 3],
}

impl<T: Plain> WinoRows<T> {
    /// Makes rows `y .. y + 3` of conv call `call` present, building the missing ones.
    fn prepare(&mut self, call: u64, y: usize, len: usize, mut build: impl FnMut(usize, &mut [T])) {
        if self.call != call {
            self.call = call;
            self.rows = [None; 3];
        }
        for r in y..y + 3 {
            let slot = r % 3;
            if self.rows[slot] != Some(r) {
                self.data[slot].resize(len);
                build(r, &mut self.data[slot]);
                self.rows[slot] = Some(r);
            }
        }
    }

    /// Rows `y, y + 1, y + 2` (after [`Self::prepare`]).
    fn rows(&self, y: usize) -> [&[T]; 3] {
        [0, 1, 2].map(|k| &self.data[(y + k) % 3][..])
    }
}

thread_local! {
    static ROWS8: RefCell<WinoRows<u8>> = RefCell::new(WinoRows::default());
    static ROWS16: RefCell<WinoRows<i16>> = RefCell::new(WinoRows::default());
    static SUMS: RefCell<Aligned<i32>> = const { RefCell::new(Aligned::new()) };
    static TILES2: RefCell<Aligned<u8>> = const { RefCell::new(Aligned::new()) };
    static TILES4: RefCell<Vec<i16>> = const { RefCell::new(Vec::new()) };
    /// An upsampler's codes of a chunk of pixels, before they go to their HR rows.
    static SHUFFLE: RefCell<Aligned<u8>> = const { RefCell::new(Aligned::new()) };
}

impl FusedNet {
    /// None unless every layer of `net` is integer (fq) and runs on the kernels.
    pub fn new(net: &IntNetwork) -> Option<Self> {
        let mut epis = Vec::new();
        let mut shuffled = Vec::new();
        for (k, l) in net.layers.iter().enumerate() {
            let IntLayer::Int(c) = l else { return None };
            let (level, pc) = net.kernels(k)?;
            if c.cout > MAX_COUT {
                return None;
            }
            // The 8-bit convs' kernel probe runs now, not in the first frame.
            super::wino4_for(level, pc);
            let epi = match net.net.layers[k].spec.role {
                Role::Head => Epi::Head,
                Role::BlockConv1(_) => Epi::Relu,
                Role::BlockConv2(_) => Epi::Res,
                Role::BodyLast => Epi::Skip,
                Role::Up { r, .. } => Epi::Shuffle(r),
                Role::Tail => Epi::Out,
            };
            epis.push(epi);
            shuffled.push(match epi {
                Epi::Shuffle(r) if c.cout % (r * r) == 0 => {
                    let ic = c.with_outputs(&crate::engine::conv::subpixel_major(c.cout, r));
                    let pc = PackedConv::new(&ic);
                    Some((ic, pc))
                }
                Epi::Shuffle(_) => return None,
                _ => None,
            });
        }
        Some(Self {
            epis,
            shuffled,
            bufs: Mutex::new(Vec::new()),
        })
    }

    /// `net` (the one this was made from) on an input map in model units; returns the HR
    /// output before `add_mean`.
    pub fn forward(&self, x: &FeatureMap, plan: &BitPlan, net: &IntNetwork) -> FeatureMap {
        let mut out = FeatureMap::default();
        self.forward_into(x, plan, net, &mut out);
        out
    }

    /// [`FusedNet::forward`] into `out`, reusing its memory.
    pub fn forward_into(
        &self,
        x: &FeatureMap,
        plan: &BitPlan,
        net: &IntNetwork,
        out: &mut FeatureMap,
    ) {
        let pool = || self.bufs.lock().unwrap_or_else(|e| e.into_inner());
        let mut bufs = pool().pop().unwrap_or_default();
        self.forward_with(x, plan, net, out, &mut bufs);
        pool().push(bufs);
    }

    /// [`FusedNet::forward_into`] with one set of buffers.
    fn forward_with(
        &self,
        x: &FeatureMap,
        plan: &BitPlan,
        net: &IntNetwork,
        out: &mut FeatureMap,
        b: &mut Buffers,
    ) {
        let q = |k: usize| net.act_quant(k, plan).expect("fq layers are all quantized");
        self.prepare(b, x.h, x.w, net.net.config.n_feats);
        let (h, w) = (x.h, x.w);
        // Input codes (4 channels per pixel, the 4th 0).
        quantize_into(x, q(0), 4, &mut b.input);
        // The body (head, residual blocks, last body conv) in row bands through groups of
        // convs: each conv of a group computes the rows its input has ready (a 3x3 conv's row
        // `y` reads rows `y - 1 ..= y + 1`), so a band's codes and residual rows are read back
        // from the core's cache by the next convs instead of from the shared cache or memory.
        let body = self
            .epis
            .iter()
            .take_while(|e| !matches!(e, Epi::Shuffle(_) | Epi::Out))
            .count();
        let (band, group) = band_and_group(h);
        // Each conv of the group: its output rows per task (a band ends on a multiple of
        // them) and its rows done.
        let mut prog = std::mem::take(&mut b.progress);
        for k0 in (0..body).step_by(group) {
            let k1 = (k0 + group).min(body);
            prog.clear();
            prog.extend((k0..k1).map(|k| {
                let (level, pc) = net.kernels(k).expect("checked in FusedNet::new");
                (Form::of(level, pc, q(k).n as u32).rows, 0)
            }));
            while prog[k1 - k0 - 1].1 < h {
                for k in k0..k1 {
                    let j = k - k0;
                    let ready = match j {
                        0 => prog[0].1 + band,
                        _ if prog[j - 1].1 >= h => h,
                        // Row `y` needs row `y + 1` of the conv before.
                        _ => prog[j - 1].1.saturating_sub(1),
                    };
                    let (per_task, done) = prog[j];
                    let upto = if ready >= h {
                        h
                    } else {
                        ready / per_task * per_task
                    };
                    if upto > done {
                        self.body_conv(net, k, q, b, done..upto);
                        prog[j].1 = upto;
                    }
                }
            }
        }
        b.progress = prog;
        let (mut hh, mut ww) = (h, w);
        let mut stage = 0;
        for (k, &epi) in self.epis.iter().enumerate().skip(body) {
            let next = (k + 1 < self.epis.len()).then(|| q(k + 1));
            let Buffers {
                b: bb,
                head,
                res,
                hr,
                lk,
                psums,
                ..
            } = &mut *b;
            let scratch = (&mut *lk, &mut *psums);
            match epi {
                Epi::Head | Epi::Relu | Epi::Res | Epi::Skip => {
                    unreachable!("body layers run in bands")
                }
                Epi::Shuffle(r) => {
                    let (src, dst) = if stage == 0 {
                        (&bb[..], &mut hr[0])
                    } else {
                        let (lo, hi) = hr.split_at_mut(stage);
                        (&lo[stage - 1][..], &mut hi[0])
                    };
                    self.conv(
                        net,
                        k,
                        src,
                        hh,
                        ww,
                        0..hh,
                        q(k),
                        next,
                        head,
                        res,
                        dst,
                        None,
                        scratch,
                    );
                    hh *= r;
                    ww *= r;
                    stage += 1;
                }
                Epi::Out => {
                    // The tail's epilogue writes every interior value.
                    out.reshape(hh, ww, 3);
                    let src = if stage == 0 {
                        &bb[..]
                    } else {
                        &hr[stage - 1][..]
                    };
                    self.conv(
                        net,
                        k,
                        src,
                        hh,
                        ww,
                        0..hh,
                        q(k),
                        None,
                        head,
                        res,
                        &mut [],
                        Some(&mut *out),
                        scratch,
                    );
                }
            }
        }
    }

    /// Output rows `ys` of body layer `k` (head, residual block conv, last body conv): from
    /// the input codes to `a`, then between `a` and `b`. A conv writes the map the conv two
    /// before it read: its row `y` only once the conv between them has computed row `y + 1`,
    /// the last that reads it — which the bands' order guarantees, since row `y` of a conv
    /// needs that row of the conv before.
    fn body_conv(
        &self,
        net: &IntNetwork,
        k: usize,
        q: impl Fn(usize) -> ActQuant,
        b: &mut Buffers,
        ys: Range<usize>,
    ) {
        let (h, w) = (b.h, b.w);
        let next = Some(q(k + 1));
        let Buffers {
            input,
            a,
            b: bb,
            head,
            res,
            lk,
            psums,
            ..
        } = b;
        let scratch = (&mut *lk, &mut *psums);
        let (src, dst) = match self.epis[k] {
            Epi::Head => (&input[..], &mut a[..]),
            Epi::Relu | Epi::Skip => (&a[..], &mut bb[..]),
            Epi::Res => (&bb[..], &mut a[..]),
            Epi::Shuffle(_) | Epi::Out => unreachable!("not a body layer"),
        };
        self.conv(
            net,
            k,
            src,
            h,
            w,
            ys,
            q(k),
            next,
            head,
            res,
            dst,
            None,
            scratch,
        );
    }

    /// Sizes the buffers for an `h x w` input (kept when the size repeats).
    fn prepare(&self, b: &mut Buffers, h: usize, w: usize, f: usize) {
        if (b.h, b.w) == (h, w) && !b.a.is_empty() {
            return;
        }
        let lr = (h + 2) * (w + 2);
        b.h = h;
        b.w = w;
        // Zeroed, in the memory they had (tiles of a large frame change size between them).
        b.input.zeroed(lr * 4);
        b.a.zeroed(lr * f);
        b.b.zeroed(lr * f);
        b.head.zeroed(h * w * f);
        b.res.zeroed(h * w * f);
        // One HR code map per upsampler stage.
        let stages = self.epis.iter().filter_map(|e| match e {
            Epi::Shuffle(r) => Some(*r),
            _ => None,
        });
        b.hr.resize_with(stages.clone().count(), Aligned::default);
        let mut s = 1;
        for (hr, r) in b.hr.iter_mut().zip(stages) {
            s *= r;
            hr.zeroed((h * s + 2) * (w * s + 2) * f);
        }
    }

    /// Output rows `ys` of layer `k` on the `h x w` code map `src`, its epilogue writing into
    /// `dst` (codes), `head`/`res` (f32) or `out` (the tail and the upsamplers: `ys` is the
    /// whole map).
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &self,
        net: &IntNetwork,
        k: usize,
        src: &[u8],
        h: usize,
        w: usize,
        ys: Range<usize>,
        a: ActQuant,
        next: Option<ActQuant>,
        head: &mut [f32],
        res: &mut [f32],
        dst: &mut [u8],
        out: Option<&mut FeatureMap>,
        (lk, psums): (&mut Aligned<f32>, &mut Vec<i32>),
    ) {
        let IntLayer::Int(ic) = &net.layers[k] else {
            unreachable!("checked in FusedNet::new")
        };
        let (level, pc) = net.kernels(k).expect("checked in FusedNet::new");
        let (ic, pc) = match &self.shuffled[k] {
            Some((ic, pc)) => (ic, pc),
            None => (ic, pc),
        };
        let epi = &self.epis[k];
        epilogue::l_times_k(a.l, &ic.ktab, lk);
        let lk = &lk[..];
        let map = Codes {
            data: src,
            h,
            w,
            cstride: pc.cstride,
            sums: None,
            // The epilogue applies it (`Span::sq`).
            defer_offset: pc.offset,
        }
        .with_sums_of_rows(pc, psums, ys.clone());
        let cout = ic.cout;
        let max_code = a.n as u32;
        let consts = Consts {
            bias: &pc.bias,
            hw: ic.hw,
            da: a.step(),
            res_scale: net.net.config.res_scale,
            // Placeholder for the tail, whose epilogue writes values, not codes.
            next: next.unwrap_or(a),
        };
        let Form {
            tiles2,
            tiles4,
            rows_i32,
            sched,
            use16,
            rows,
        } = Form::of(level, pc, max_code);
        let chunk = col_chunk(level);
        // Each thread keeps the transformed rows of this call it built last (rows y, y+1, y+2
        // of consecutive output rows overlap), tagged with a number unique to this call.
        let call = NEXT_CALL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tl = wino::row_len(w, pc.cstride);
        let plane = w * pc.cout8;
        // Sums of rows `y0 .. y0 + rows` (those inside the map), then `run(r, cols, s)` for
        // every chunk of columns of row `y0 + r`. Rows are computed in chunks of columns, each
        // chunk's epilogue right after its sums, so that the sums are read back from cache
        // even in wide rows.
        let row_work = |y0: usize, run: &mut RunFn, hint: &HintFn| {
            // (`ys` ends on a multiple of `rows` or at `h`, unless the Winograd mode changed
            // since the schedule was made: then the last task computes fewer rows.)
            let n = rows.min(ys.end - y0);
            let pre = |cols: &Range<usize>| (0..n).for_each(|r| hint(r, cols.clone()).prefetch());
            // The epilogue of columns `cols` of the task's rows from their sums (and, with
            // 8-bit weights, the window code sums of the offset correction it applies).
            let epilogue = |sums: &[i32], cols: Range<usize>, run: &mut RunFn| {
                let mut sq = [0i32; MAX_COL_CHUNK];
                for r in 0..n {
                    let s = &sums[r * plane + cols.start * pc.cout8..];
                    let sq: &[i32] = if map.defer_offset {
                        super::window_code_sums(&map, pc, y0 + r, cols.clone(), s, &mut sq);
                        &sq[..cols.len()]
                    } else {
                        &[]
                    };
                    run(r, cols.clone(), s, sq);
                }
            };
            SUMS.with(|cell| {
                let mut sums = cell.borrow_mut();
                sums.resize(rows * plane);
                if tiles4 {
                    return TILES4.with(|cell| {
                        let mut tiles = cell.borrow_mut();
                        for x0 in (0..w).step_by(chunk) {
                            let cols = x0..(x0 + chunk).min(w);
                            pre(&cols);
                            row_sums_wino4(
                                level,
                                &map,
                                pc,
                                y0,
                                cols.clone(),
                                &mut tiles,
                                &mut sums,
                            );
                            epilogue(&sums, cols, run);
                        }
                    });
                }
                if tiles2 {
                    return TILES2.with(|cell| {
                        let mut tiles = cell.borrow_mut();
                        tiles.resize(wino::tiles2_len(chunk / 2, pc.cstride));
                        for x0 in (0..w).step_by(chunk) {
                            let cols = x0..(x0 + chunk).min(w);
                            let (t0, t1) = (x0 / 2, cols.end.div_ceil(2));
                            pre(&cols);
                            let data = &mut tiles[..wino::tiles2_len(t1 - t0, pc.cstride)];
                            wino::build_tiles2(level, &map, y0, t0..t1, max_code, data);
                            let v = Wino2Input {
                                data,
                                t0,
                                tiles: t1 - t0,
                                w,
                                cstride: pc.cstride,
                                max_code,
                            };
                            row_sums_wino2_i32(level, &v, pc, cols.clone(), &mut sums);
                            epilogue(&sums, cols, run);
                        }
                    });
                }
                let y = y0;
                let rows8 = (sched.is_some() || rows_i32).then(|| {
                    ROWS8.with(|cell| {
                        let mut c = cell.borrow_mut();
                        c.prepare(call, y, tl, |r, row| {
                            wino::build_row(level, &map, r, max_code, row)
                        });
                    })
                });
                if use16 {
                    ROWS16.with(|cell| {
                        let mut c = cell.borrow_mut();
                        c.prepare(call, y, tl, |r, row| wino::build_row16(level, &map, r, row));
                    })
                }
                for x0 in (0..w).step_by(chunk) {
                    let cols = x0..(x0 + chunk).min(w);
                    // One row of the direct kernel: the kernel takes the epilogue's reads (the
                    // AMX kernel prefetches them between its products); else they are
                    // prefetched now.
                    let kernel_hint = rows8.is_none() && !use16 && n == 1;
                    if !kernel_hint {
                        pre(&cols);
                    }
                    if let Some(()) = rows8 {
                        ROWS8.with(|cell| {
                            let c = cell.borrow();
                            let v = WinoInput {
                                rows: c.rows(y),
                                w,
                                cstride: pc.cstride,
                                max_code,
                            };
                            match &sched {
                                Some(sched) => {
                                    row_sums_wino(level, &v, pc, sched, cols.clone(), &mut sums)
                                }
                                None => row_sums_wino_i32(level, &v, pc, cols.clone(), &mut sums),
                            }
                        })
                    } else if use16 {
                        ROWS16.with(|cell| {
                            let c = cell.borrow();
                            let v = WinoInput16 {
                                rows: c.rows(y),
                                w,
                                cstride: pc.cstride,
                            };
                            row_sums_wino16(level, &v, &map, pc, y, cols.clone(), &mut sums);
                        })
                    } else {
                        let h = if kernel_hint {
                            hint(0, cols.clone())
                        } else {
                            Hint::NONE
                        };
                        row_sums_hinted(level, &map, pc, y, max_code, cols.clone(), &mut sums, h);
                    }
                    epilogue(&sums, cols, run);
                }
            })
        };
        let wp = w + 2;
        match *epi {
            Epi::Out => {
                let out = out.expect("output map");
                let owp = out.wp();
                out.data[(ys.start + 1) * owp * cout..(ys.end + 1) * owp * cout]
                    .par_chunks_mut(rows * owp * cout)
                    .enumerate()
                    .for_each(|(i, chunk)| {
                        row_work(
                            ys.start + i * rows,
                            &mut |r, cols, s, sq| {
                                let row = &mut chunk[r * owp * cout..];
                                let px = Pixel {
                                    out: &mut row[(cols.start + 1) * cout..][..cols.len() * cout],
                                    res: &mut [],
                                    head: &mut [],
                                    d: &mut [],
                                };
                                let span =
                                    span_of(pc, ys.start + i * rows + r, h, w, cols, s, sq, lk);
                                epilogue::run(level, Op::Values, &consts, cout, &span, px);
                            },
                            &|_, _| Hint::NONE,
                        )
                    });
            }
            Epi::Shuffle(r) => {
                let c = cout / (r * r);
                let hwp = w * r + 2;
                // A chunk's codes, for the chunk width `row_work` uses in this call.
                let codes_len = chunk * cout;
                dst[(ys.start * r + 1) * hwp * c..(ys.end * r + 1) * hwp * c]
                    .par_chunks_mut(rows * r * hwp * c)
                    .enumerate()
                    .for_each(|(i, chunk)| {
                        SHUFFLE.with(|cell| {
                            let mut codes = cell.borrow_mut();
                            codes.resize(codes_len);
                            row_work(
                                ys.start + i * rows,
                                &mut |ry, cols, s, sq| {
                                    let hr = &mut chunk[ry * r * hwp * c..];
                                    let px = Pixel {
                                        out: &mut [],
                                        res: &mut [],
                                        head: &mut [],
                                        d: &mut codes[..cols.len() * cout],
                                    };
                                    let span = span_of(
                                        pc,
                                        ys.start + i * rows + ry,
                                        h,
                                        w,
                                        cols.clone(),
                                        s,
                                        sq,
                                        lk,
                                    );
                                    epilogue::run(level, Op::Codes, &consts, cout, &span, px);
                                    // Sub-pixel-major codes (`shuffled`): HR row `i` of pixel
                                    // `xx` is the pixel's codes `i·r·c .. (i + 1)·r·c`.
                                    for (xx, px) in cols.zip(codes.chunks_exact(cout)) {
                                        for (i, sub) in px.chunks_exact(r * c).enumerate() {
                                            let at = (i * hwp + xx * r + 1) * c;
                                            hr[at..at + r * c].copy_from_slice(sub);
                                        }
                                    }
                                },
                                &|_, _| Hint::NONE,
                            )
                        })
                    });
            }
            Epi::Head | Epi::Relu | Epi::Res | Epi::Skip => {
                let op = match *epi {
                    Epi::Head => Op::Head,
                    Epi::Relu => Op::Relu,
                    Epi::Res => Op::Res,
                    _ => Op::Skip,
                };
                let fw = w * cout;
                let band = ys.start * fw..ys.end * fw;
                dst[(ys.start + 1) * wp * cout..(ys.end + 1) * wp * cout]
                    .par_chunks_mut(rows * wp * cout)
                    .zip(res[band.clone()].par_chunks_mut(rows * fw))
                    .zip(head[band].par_chunks_mut(rows * fw))
                    .enumerate()
                    .for_each(|(i, ((dst, res), head))| {
                        let (rbase, hbase) = (res.as_ptr() as usize, head.as_ptr() as usize);
                        // The f32 map the epilogue reads (not the codes it writes: their
                        // prefetch cost more than it saved, ≈ 0.8% of an x2 frame in perf
                        // sample counts).
                        let hint = |r: usize, cols: Range<usize>| {
                            let (at, len) =
                                ((r * fw + cols.start * cout) * 4, cols.len() * cout * 4);
                            match op {
                                Op::Res => Hint {
                                    at: rbase + at,
                                    len,
                                },
                                Op::Skip => Hint {
                                    at: hbase + at,
                                    len,
                                },
                                _ => Hint::NONE,
                            }
                        };
                        row_work(
                            ys.start + i * rows,
                            &mut |r, cols, s, sq| {
                                let (row, res, head) = (
                                    &mut dst[r * wp * cout..],
                                    &mut res[r * fw..],
                                    &mut head[r * fw..],
                                );
                                let len = cols.len() * cout;
                                let px = Pixel {
                                    out: &mut [],
                                    res: &mut res[cols.start * cout..][..len],
                                    head: &mut head[cols.start * cout..][..len],
                                    d: &mut row[(cols.start + 1) * cout..][..len],
                                };
                                let span =
                                    span_of(pc, ys.start + i * rows + r, h, w, cols, s, sq, lk);
                                epilogue::run(level, op, &consts, cout, &span, px);
                            },
                            &hint,
                        )
                    });
            }
        }
    }
}
