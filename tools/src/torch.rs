//! PyTorch checkpoints without PyTorch: a reader for state dicts in `torch.save`'s zip format
//! (PyTorch ≥ 1.6: stored zip entries, a pickle subset, tensor storages) and in its legacy
//! format (PyTorch 0.4–1.5, and later with `_use_new_zipfile_serialization=False`: pickles in
//! sequence, then the raw storages — the era of the EDSR-PyTorch release models), and a
//! writer producing the zip layout (`<name>/data.pkl`, `<name>/data/<key>`, `<name>/version`,
//! `<name>/byteorder`).
//!
//! Only what state dicts use is understood: dicts / OrderedDicts of tensors rebuilt with
//! `torch._utils._rebuild_tensor_v2` (or `_rebuild_parameter`) on float, half, bfloat16 or
//! double storages. Anything else is parsed as an opaque value and left alone.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};

/// A named tensor of a state dict, converted to f32.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

// ---------------------------------------------------------------------------------------------
// Zip (stored entries only, as torch.save writes them).

fn u16_at(b: &[u8], i: usize) -> Result<u16> {
    Ok(u16::from_le_bytes(
        b.get(i..i.saturating_add(2))
            .context("truncated zip")?
            .try_into()?,
    ))
}

fn u32_at(b: &[u8], i: usize) -> Result<u32> {
    Ok(u32::from_le_bytes(
        b.get(i..i.saturating_add(4))
            .context("truncated zip")?
            .try_into()?,
    ))
}

fn u64_at(b: &[u8], i: usize) -> Result<u64> {
    Ok(u64::from_le_bytes(
        b.get(i..i.saturating_add(8))
            .context("truncated zip")?
            .try_into()?,
    ))
}

/// The stored entries of a zip archive, by name.
pub fn read_zip(bytes: &[u8]) -> Result<HashMap<String, &[u8]>> {
    if bytes.len() < 22 || &bytes[..4] != b"PK\x03\x04" {
        bail!("not a zip archive (a PyTorch .pt file is one)");
    }
    // End of central directory: the last "PK\5\6" within the final 64 KiB + 22 bytes.
    let lo = bytes.len().saturating_sub(22 + 65535);
    let eocd = (lo..=bytes.len() - 22)
        .rev()
        .find(|&i| &bytes[i..i + 4] == b"PK\x05\x06")
        .context("zip end-of-central-directory record not found (truncated file?)")?;
    let mut n = u16_at(bytes, eocd + 10)? as usize;
    let mut cd = u32_at(bytes, eocd + 16)? as usize;
    if n == 0xFFFF || cd == 0xFFFF_FFFF {
        // Zip64: the locator sits just before the EOCD record.
        let loc = eocd.checked_sub(20).context("zip64 locator missing")?;
        if &bytes[loc..loc + 4] != b"PK\x06\x07" {
            bail!("zip64 locator missing");
        }
        let rec = u64_at(bytes, loc + 8)? as usize;
        if u32_at(bytes, rec).ok() != Some(0x0606_4b50) {
            bail!("zip64 end-of-central-directory record missing");
        }
        n = u64_at(bytes, rec.saturating_add(32))? as usize;
        cd = u64_at(bytes, rec.saturating_add(48))? as usize;
    }
    let mut out = HashMap::new();
    let mut p = cd;
    for _ in 0..n {
        if u32_at(bytes, p)? != 0x0201_4b50 {
            bail!("corrupt zip central directory");
        }
        let method = u16_at(bytes, p + 10)?;
        let crc = u32_at(bytes, p + 16)?;
        let mut csize = u32_at(bytes, p + 20)? as u64;
        let mut usize_ = u32_at(bytes, p + 24)? as u64;
        let name_len = u16_at(bytes, p + 28)? as usize;
        let extra_len = u16_at(bytes, p + 30)? as usize;
        let comment_len = u16_at(bytes, p + 32)? as usize;
        let mut local = u32_at(bytes, p + 42)? as u64;
        let name = std::str::from_utf8(
            bytes
                .get(p + 46..p + 46 + name_len)
                .context("truncated zip")?,
        )?
        .to_string();
        // Zip64 extra field (id 1): the 0xFFFFFFFF fields, in order.
        let extra = bytes
            .get(p + 46 + name_len..p + 46 + name_len + extra_len)
            .context("truncated zip")?;
        let mut e = 0;
        while e + 4 <= extra.len() {
            let id = u16::from_le_bytes([extra[e], extra[e + 1]]);
            let len = u16::from_le_bytes([extra[e + 2], extra[e + 3]]) as usize;
            if id == 1 {
                let mut f = e + 4;
                let mut next = |v: &mut u64| -> Result<()> {
                    if *v == 0xFFFF_FFFF {
                        *v = u64::from_le_bytes(
                            extra.get(f..f + 8).context("zip64 field")?.try_into()?,
                        );
                        f += 8;
                    }
                    Ok(())
                };
                next(&mut usize_)?;
                next(&mut csize)?;
                next(&mut local)?;
            }
            e += 4 + len;
        }
        if method != 0 {
            bail!("zip entry {name} is compressed (method {method}); torch.save stores entries");
        }
        let l = local as usize;
        if u32_at(bytes, l)? != 0x0403_4b50 {
            bail!("corrupt zip local header for {name}");
        }
        let start = l + 30 + u16_at(bytes, l + 26)? as usize + u16_at(bytes, l + 28)? as usize;
        let data = bytes
            .get(start..start.saturating_add(csize as usize))
            .with_context(|| format!("zip entry {name} is truncated"))?;
        // A stored entry whose bytes changed after writing is an error (torch.load does not
        // check, and loads the damaged values). A recorded 0 means none was computed
        // (`torch.serialization.set_crc32_options(False)`, PyTorch ≥ 2.4).
        let found = crc32(data);
        if crc != 0 && found != crc {
            bail!(
                "zip entry {name} is damaged: its CRC-32 is {found:08x}, the archive records \
                 {crc:08x} (the file changed after it was written)"
            );
        }
        out.insert(name, data);
        p += 46 + name_len + extra_len + comment_len;
    }
    Ok(out)
}

fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, t) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *t = c;
    }
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8)
    })
}

/// Writes stored entries as torch.save does (data aligned to 64 bytes through the extra field).
pub fn write_zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let header_len = 30 + name.len() + 4;
        let pad = (64 - (out.len() + header_len) % 64) % 64;
        let extra_len = 4 + pad;
        // Local header.
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&20u16.to_le_bytes()); // version needed
        out.extend_from_slice(&0u16.to_le_bytes()); // flags
        out.extend_from_slice(&0u16.to_le_bytes()); // method: stored
        out.extend_from_slice(&0u16.to_le_bytes()); // time
        out.extend_from_slice(&0x21u16.to_le_bytes()); // date (1980-01-01)
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&(extra_len as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&0x4b46u16.to_le_bytes()); // "FB" padding record, as PyTorch
        out.extend_from_slice(&(pad as u16).to_le_bytes());
        out.extend(std::iter::repeat_n(b'Z', pad));
        out.extend_from_slice(data);
        // Central directory record.
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes()); // made by
        central.extend_from_slice(&20u16.to_le_bytes()); // needed
        central.extend_from_slice(&0u16.to_le_bytes()); // flags
        central.extend_from_slice(&0u16.to_le_bytes()); // stored
        central.extend_from_slice(&0u16.to_le_bytes());
        central.extend_from_slice(&0x21u16.to_le_bytes());
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&(data.len() as u32).to_le_bytes());
        central.extend_from_slice(&(data.len() as u32).to_le_bytes());
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes()); // extra
        central.extend_from_slice(&0u16.to_le_bytes()); // comment
        central.extend_from_slice(&0u16.to_le_bytes()); // disk
        central.extend_from_slice(&0u16.to_le_bytes()); // internal attrs
        central.extend_from_slice(&0u32.to_le_bytes()); // external attrs
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    let cd_len = central.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&cd_len.to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

// ---------------------------------------------------------------------------------------------
// Pickle subset.

#[derive(Clone, Debug, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    /// A storage (its type's name and key), from `offset` elements on (legacy storage views).
    Storage {
        dtype: String,
        key: String,
        offset: usize,
    },
    /// An integer of more than 8 bytes (little-endian two's complement), e.g. the legacy
    /// format's magic number.
    Long(Vec<u8>),
    Tensor(TensorRef),
    Opaque(String),
    Mark,
}

#[derive(Clone, Debug, PartialEq)]
struct TensorRef {
    dtype: String,
    key: String,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

fn as_usize(v: &Value) -> Result<usize> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as usize),
        _ => bail!("expected a non-negative integer, found {v:?}"),
    }
}

fn usizes(v: &Value) -> Result<Vec<usize>> {
    match v {
        Value::Tuple(t) | Value::List(t) => t.iter().map(as_usize).collect(),
        _ => bail!("expected a tuple of sizes, found {v:?}"),
    }
}

fn call(f: Value, args: Value) -> Result<Value> {
    let Value::Global(module, name) = &f else {
        return Ok(Value::Opaque(format!("call of {f:?}")));
    };
    let args = match args {
        Value::Tuple(a) => a,
        other => bail!("reduce arguments must be a tuple, found {other:?}"),
    };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") | ("builtins", "dict") => Ok(Value::Dict(Vec::new())),
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
            let Some(Value::Storage { dtype, key, offset }) = args.first().cloned() else {
                bail!("tensor without a storage: {args:?}");
            };
            Ok(Value::Tensor(TensorRef {
                dtype,
                key,
                offset: offset + as_usize(args.get(1).context("tensor offset")?)?,
                shape: usizes(args.get(2).context("tensor size")?)?,
                stride: usizes(args.get(3).context("tensor stride")?)?,
            }))
        }
        ("torch._utils", "_rebuild_parameter")
        | ("torch._utils", "_rebuild_parameter_with_state") => {
            Ok(args.into_iter().next().context("parameter without data")?)
        }
        _ => Ok(Value::Opaque(format!("{module}.{name}"))),
    }
}

/// The pickle that starts at byte `start` of `data`: its value and the byte after its STOP.
/// Every storage a persistent id names is recorded in `storages` (key → storage type).
fn unpickle(
    data: &[u8],
    start: usize,
    storages: &mut HashMap<String, String>,
) -> Result<(Value, usize)> {
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    let mut i = start;
    let take = |i: &mut usize, n: usize| -> Result<&[u8]> {
        let s = data.get(*i..*i + n).context("pickle is truncated")?;
        *i += n;
        Ok(s)
    };
    let pop_mark = |stack: &mut Vec<Value>| -> Result<Vec<Value>> {
        let m = stack
            .iter()
            .rposition(|v| *v == Value::Mark)
            .context("pickle MARK missing")?;
        let items = stack.split_off(m + 1);
        stack.pop();
        Ok(items)
    };
    let pop = |stack: &mut Vec<Value>| stack.pop().context("pickle stack underflow");
    loop {
        let op = *data
            .get(i)
            .context("pickle ends without STOP (truncated?)")?;
        i += 1;
        match op {
            0x80 => {
                take(&mut i, 1)?;
            } // PROTO
            0x95 => {
                take(&mut i, 8)?;
            } // FRAME
            b'.' => return Ok((pop(&mut stack)?, i)), // STOP
            b'(' => stack.push(Value::Mark),
            b'}' => stack.push(Value::Dict(Vec::new())),
            b']' => stack.push(Value::List(Vec::new())),
            b')' => stack.push(Value::Tuple(Vec::new())),
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'J' => {
                let v = i32::from_le_bytes(take(&mut i, 4)?.try_into()?);
                stack.push(Value::Int(v as i64));
            }
            b'K' => {
                let v = take(&mut i, 1)?[0];
                stack.push(Value::Int(v as i64));
            }
            b'M' => {
                let v = u16::from_le_bytes(take(&mut i, 2)?.try_into()?);
                stack.push(Value::Int(v as i64));
            }
            0x8a => {
                // LONG1
                let n = take(&mut i, 1)?[0] as usize;
                let b = take(&mut i, n)?;
                if n > 8 {
                    stack.push(Value::Long(b.to_vec()));
                    continue;
                }
                let mut v: i64 = 0;
                for (k, &x) in b.iter().enumerate() {
                    v |= (x as i64) << (8 * k);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Value::Int(v));
            }
            b'G' => {
                let v = f64::from_be_bytes(take(&mut i, 8)?.try_into()?);
                stack.push(Value::Float(v));
            }
            b'X' | 0x8c | 0x8d | b'T' | b'U' | b'B' | b'C' | 0x8e => {
                let n = match op {
                    b'X' | b'T' | b'B' => u32::from_le_bytes(take(&mut i, 4)?.try_into()?) as usize,
                    0x8c | b'U' | b'C' => take(&mut i, 1)?[0] as usize,
                    _ => u64::from_le_bytes(take(&mut i, 8)?.try_into()?) as usize,
                };
                let b = take(&mut i, n)?;
                stack.push(match op {
                    b'X' | 0x8c | 0x8d => Value::Str(std::str::from_utf8(b)?.to_string()),
                    b'T' | b'U' => Value::Str(String::from_utf8_lossy(b).into_owned()),
                    _ => Value::Bytes(b.to_vec()),
                });
            }
            b'c' => {
                let line = |i: &mut usize| -> Result<String> {
                    let end = data[*i..]
                        .iter()
                        .position(|&c| c == b'\n')
                        .context("pickle GLOBAL unterminated")?;
                    let s = std::str::from_utf8(&data[*i..*i + end])?.to_string();
                    *i += end + 1;
                    Ok(s)
                };
                let module = line(&mut i)?;
                let name = line(&mut i)?;
                stack.push(Value::Global(module, name));
            }
            0x93 => {
                // STACK_GLOBAL
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => stack.push(Value::Global(m, n)),
                    _ => bail!("STACK_GLOBAL needs two strings"),
                }
            }
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    bail!("pickle stack underflow");
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(items));
            }
            b'q' => {
                let k = take(&mut i, 1)?[0] as u32;
                memo.insert(k, stack.last().context("memo of empty stack")?.clone());
            }
            b'r' => {
                let k = u32::from_le_bytes(take(&mut i, 4)?.try_into()?);
                memo.insert(k, stack.last().context("memo of empty stack")?.clone());
            }
            0x94 => {
                let k = memo.len() as u32;
                memo.insert(k, stack.last().context("memo of empty stack")?.clone());
            }
            b'h' => {
                let k = take(&mut i, 1)?[0] as u32;
                stack.push(memo.get(&k).context("pickle memo miss")?.clone());
            }
            b'j' => {
                let k = u32::from_le_bytes(take(&mut i, 4)?.try_into()?);
                stack.push(memo.get(&k).context("pickle memo miss")?.clone());
            }
            b's' => {
                let v = pop(&mut stack)?;
                let k = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::Dict(d)) => d.push((k, v)),
                    _ => bail!("SETITEM on a non-dict"),
                }
            }
            b'u' => {
                let items = pop_mark(&mut stack)?;
                let Some(Value::Dict(d)) = stack.last_mut() else {
                    bail!("SETITEMS on a non-dict");
                };
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
            }
            b'a' => {
                let v = pop(&mut stack)?;
                if let Some(Value::List(l)) = stack.last_mut() {
                    l.push(v);
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack)?;
                if let Some(Value::List(l)) = stack.last_mut() {
                    l.extend(items);
                }
            }
            b'R' => {
                let args = pop(&mut stack)?;
                let f = pop(&mut stack)?;
                stack.push(call(f, args)?);
            }
            0x81 => {
                // NEWOBJ
                let args = pop(&mut stack)?;
                let cls = pop(&mut stack)?;
                stack.push(call(cls, args)?);
            }
            b'b' => {
                // BUILD: state of an object (OrderedDict._metadata and such) is dropped.
                pop(&mut stack)?;
            }
            b'Q' => {
                // BINPERSID: ('storage', storage type, key, location, numel), and in the
                // legacy format a sixth item: None or a view (view key, offset, numel).
                let pid = pop(&mut stack)?;
                let Value::Tuple(t) = pid else {
                    bail!("unexpected persistent id {pid:?}");
                };
                let dtype = match t.get(1) {
                    Some(Value::Global(_, n)) => n.clone(),
                    other => bail!("unexpected storage type {other:?}"),
                };
                let key = match t.get(2) {
                    Some(Value::Str(k)) => k.clone(),
                    other => bail!("unexpected storage key {other:?}"),
                };
                let offset = match t.get(5) {
                    None | Some(Value::None) => 0,
                    Some(Value::Tuple(view)) if view.len() == 3 => as_usize(&view[1])?,
                    Some(other) => bail!("unexpected storage view {other:?}"),
                };
                storages.insert(key.clone(), dtype.clone());
                stack.push(Value::Storage { dtype, key, offset });
            }
            b'0' => {
                pop(&mut stack)?;
            }
            b'1' => {
                pop_mark(&mut stack)?;
            }
            b'2' => {
                let v = stack.last().context("DUP of empty stack")?.clone();
                stack.push(v);
            }
            _ => bail!("unsupported pickle opcode 0x{op:02x} at byte {}", i - 1),
        }
    }
}

/// Reads the state dict of a PyTorch checkpoint (zip or legacy format). If the pickled object
/// is a dict holding a `state_dict` or `model` dict (training checkpoints), that inner dict is
/// read.
pub fn read_state_dict(bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    if bytes.starts_with(b"PK\x03\x04") {
        read_zip_state_dict(bytes)
    } else if bytes.len() >= 2 && bytes[0] == 0x80 && (2..=5).contains(&bytes[1]) {
        read_legacy_state_dict(bytes)
    } else if bytes.get(257..262) == Some(b"ustar") {
        bail!(
            "this is a tar-format PyTorch checkpoint (PyTorch before 0.1.10): load and re-save \
             it with PyTorch (torch.save(torch.load(f), g))"
        )
    } else {
        bail!("not a PyTorch checkpoint: neither a zip archive nor a legacy torch.save pickle")
    }
}

fn read_zip_state_dict(bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    let zip = read_zip(bytes)?;
    let pkl_name = zip
        .keys()
        .find(|k| k.ends_with("/data.pkl") || k.as_str() == "data.pkl")
        .context("no data.pkl in the archive: not a torch.save file")?
        .clone();
    let prefix = &pkl_name[..pkl_name.len() - "data.pkl".len()];
    let (root, _) = unpickle(zip[&pkl_name], 0, &mut HashMap::new()).context("data.pkl")?;
    state_dict_of(root, |key| zip.get(&format!("{prefix}data/{key}")).copied())
}

/// `torch.serialization`'s legacy magic number, 0x1950a86a20f9469cfc6c, little-endian.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// The legacy format: pickles of the magic number, the protocol version (1001), the system
/// info and the object (storages as persistent ids), then a pickled list of storage keys, then
/// each of those storages in that order as an i64 element count and the raw elements.
fn read_legacy_state_dict(bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    let mut storages = HashMap::new();
    let (magic, i) = unpickle(bytes, 0, &mut storages).context("legacy header")?;
    if magic != Value::Long(LEGACY_MAGIC.to_vec()) {
        bail!("not a PyTorch checkpoint: a pickle, but without torch.save's magic number");
    }
    let (version, i) = unpickle(bytes, i, &mut storages).context("legacy header")?;
    if version != Value::Int(1001) {
        bail!("legacy torch.save protocol version {version:?} is not 1001");
    }
    let (sys_info, i) = unpickle(bytes, i, &mut storages).context("legacy header")?;
    let little = match &sys_info {
        Value::Dict(d) => d
            .iter()
            .find(|(k, _)| *k == Value::Str("little_endian".into()))
            .map(|(_, v)| v.clone()),
        _ => None,
    };
    if little == Some(Value::Bool(false)) {
        bail!("the checkpoint was saved on a big-endian machine; only little-endian is read");
    }
    let (root, i) = unpickle(bytes, i, &mut storages).context("the pickled object")?;
    let (keys, mut i) = unpickle(bytes, i, &mut storages).context("the storage keys")?;
    let Value::List(keys) = keys else {
        bail!("the storage key list is {keys:?}");
    };
    let mut raw: HashMap<String, &[u8]> = HashMap::new();
    for key in keys {
        let Value::Str(key) = key else {
            bail!("storage key {key:?} is not a string");
        };
        let dtype = storages
            .get(&key)
            .with_context(|| format!("storage {key} is stored but never used"))?;
        let size = element(dtype)?.0;
        let count = bytes
            .get(i..i + 8)
            .with_context(|| format!("storage {key} is truncated"))?;
        let count = usize::try_from(i64::from_le_bytes(count.try_into()?))
            .with_context(|| format!("storage {key} has a negative size"))?;
        let len = count
            .checked_mul(size)
            .with_context(|| format!("storage {key} is too large"))?;
        let data = bytes
            .get(i + 8..)
            .and_then(|b| b.get(..len))
            .with_context(|| format!("storage {key} is truncated"))?;
        raw.insert(key, data);
        i += 8 + len;
    }
    state_dict_of(root, |key| raw.get(key).copied())
}

/// One element's bytes to f32.
type ToF32 = fn(&[u8]) -> f32;

/// Element size and conversion to f32 of a storage type.
fn element(dtype: &str) -> Result<(usize, ToF32)> {
    Ok(match dtype {
        "FloatStorage" => (4, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        "DoubleStorage" => (8, |b| f64::from_le_bytes(b.try_into().unwrap()) as f32),
        "HalfStorage" => (2, |b| half_to_f32(u16::from_le_bytes([b[0], b[1]]))),
        "BFloat16Storage" => (2, |b| {
            f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)
        }),
        other => bail!("unsupported storage type {other}"),
    })
}

/// The tensors of the unpickled `root` (a state dict, or a dict holding one), their storages'
/// bytes looked up by key.
fn state_dict_of<'a>(
    root: Value,
    storage: impl Fn(&str) -> Option<&'a [u8]>,
) -> Result<Vec<(String, Tensor)>> {
    let mut dict = match root {
        Value::Dict(d) => d,
        other => bail!("the checkpoint holds {other:?}, not a state dict"),
    };
    for inner in ["state_dict", "model"] {
        if let Some((_, Value::Dict(d))) = dict
            .iter()
            .find(|(k, _)| *k == Value::Str(inner.into()))
            .cloned()
        {
            dict = d;
            break;
        }
    }
    let mut out = Vec::new();
    for (k, v) in dict {
        let (Value::Str(name), Value::Tensor(t)) = (k, v) else {
            continue;
        };
        let (size, conv) = element(&t.dtype).with_context(|| format!("tensor {name}"))?;
        let raw =
            storage(&t.key).with_context(|| format!("tensor {name}: storage {} missing", t.key))?;
        let numel = t
            .shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .with_context(|| format!("tensor {name}: shape {:?} too large", t.shape))?;
        // Contiguous (row-major) strides only: state dicts of convs are.
        let mut expect = 1;
        for (d, &s) in t.shape.iter().zip(&t.stride).rev() {
            if *d > 1 && s != expect {
                bail!("tensor {name}: non-contiguous strides {:?}", t.stride);
            }
            expect = expect.saturating_mul(*d);
        }
        let b = t
            .offset
            .checked_mul(size)
            .zip(numel.checked_mul(size))
            .and_then(|(start, len)| raw.get(start..start.checked_add(len)?))
            .with_context(|| format!("tensor {name}: storage {} too short", t.key))?;
        out.push((
            name,
            Tensor {
                shape: t.shape.clone(),
                data: b.chunks_exact(size).map(conv).collect(),
            },
        ));
    }
    Ok(out)
}

fn half_to_f32(h: u16) -> f32 {
    let s = ((h >> 15) as u32) << 31;
    let e = ((h >> 10) & 0x1f) as u32;
    let m = (h & 0x3ff) as u32;
    let bits = match (e, m) {
        (0, 0) => s,
        (0, _) => {
            // Subnormal.
            let v = m as f32 / 1024.0 * 2f32.powi(-14);
            return if s != 0 { -v } else { v };
        }
        (31, 0) => s | 0x7f80_0000,
        (31, _) => s | 0x7fc0_0000,
        _ => s | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

// ---------------------------------------------------------------------------------------------
// Writer.

struct Pickler {
    out: Vec<u8>,
    memo: u32,
}

impl Pickler {
    fn put(&mut self) {
        if self.memo < 256 {
            self.out.extend_from_slice(&[b'q', self.memo as u8]);
        } else {
            self.out.push(b'r');
            self.out.extend_from_slice(&self.memo.to_le_bytes());
        }
        self.memo += 1;
    }
    fn global(&mut self, module: &str, name: &str) {
        self.out.push(b'c');
        self.out.extend_from_slice(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
        self.put();
    }
    fn str(&mut self, s: &str) {
        self.out.push(b'X');
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
        self.put();
    }
    fn int(&mut self, v: usize) {
        if v < 256 {
            self.out.extend_from_slice(&[b'K', v as u8]);
        } else if v < 65536 {
            self.out.push(b'M');
            self.out.extend_from_slice(&(v as u16).to_le_bytes());
        } else {
            self.out.push(b'J');
            self.out.extend_from_slice(&(v as i32).to_le_bytes());
        }
    }
    fn tuple(&mut self, items: &[usize]) {
        match items.len() {
            0 => self.out.push(b')'),
            1..=3 => {
                items.iter().for_each(|&v| self.int(v));
                self.out.push(0x84 + items.len() as u8);
            }
            _ => {
                self.out.push(b'(');
                items.iter().for_each(|&v| self.int(v));
                self.out.push(b't');
            }
        }
        self.put();
    }
}

/// Writes an OrderedDict of float32 tensors as `torch.save(state_dict, ...)` does (protocol 2,
/// one storage per tensor, `archive` as the folder name).
pub fn write_state_dict(tensors: &[(String, Tensor)]) -> Vec<u8> {
    let mut p = Pickler {
        out: vec![0x80, 2],
        memo: 0,
    };
    p.global("collections", "OrderedDict");
    p.out.extend_from_slice(b")R");
    p.put();
    p.out.push(b'(');
    for (k, (name, t)) in tensors.iter().enumerate() {
        p.str(name);
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.out.push(b'(');
        // Persistent id: ('storage', torch.FloatStorage, key, 'cpu', numel)
        p.out.push(b'(');
        p.str("storage");
        p.global("torch", "FloatStorage");
        p.str(&k.to_string());
        p.str("cpu");
        p.int(t.data.len());
        p.out.push(b't');
        p.put();
        p.out.push(b'Q');
        p.int(0);
        p.tuple(&t.shape);
        let mut stride = vec![1usize; t.shape.len()];
        for d in (0..t.shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * t.shape[d + 1];
        }
        p.tuple(&stride);
        p.out.push(0x89); // requires_grad = False
        p.global("collections", "OrderedDict");
        p.out.extend_from_slice(b")R");
        p.put();
        p.out.push(b't');
        p.put();
        p.out.push(b'R');
        p.put();
    }
    p.out.extend_from_slice(b"u.");
    let mut entries = vec![("archive/data.pkl".to_string(), p.out)];
    entries.push(("archive/byteorder".into(), b"little".to_vec()));
    for (k, (_, t)) in tensors.iter().enumerate() {
        entries.push((
            format!("archive/data/{k}"),
            t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
    }
    entries.push(("archive/version".into(), b"3\n".to_vec()));
    write_zip(&entries)
}
