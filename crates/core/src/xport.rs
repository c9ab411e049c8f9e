//! SAS transport (XPORT) files, versions 5 and 8 (`.xpt`: version 5 is the format the FDA requires for
//! submissions; SAS's TS-140), read as a stream of bytes: [`XptStream`] takes chunks as they arrive and hands
//! on each observation as soon as it is known to be one, so ingestion (which is pushed bytes) and staging
//! (which pulls them) share it and neither holds more than the header and one observation plus 80 bytes.
//!
//! Written here rather than taken from a crate: the crates that read XPT (`xport`, `xportrs`) read a whole
//! file or a whole dataset into memory, and neither reports the record and variable of a defect. The layout
//! is small: 80-byte header records, one 140-byte NAMESTR per variable, then fixed-length observations
//! padded with blanks to a multiple of 80 bytes; version 8 renames the headers, keeps names of up to 32
//! characters in the NAMESTR and labels longer than 40 in a section of their own. Checked against pyreadstat
//! and R's `foreign::read.xport` on the CDISC pilot's ADSL (`data/examples/cdiscpilot/`), and against
//! pyreadstat's version 8 files (`tests/fixtures/xpt/`).
//!
//! One dataset per file, as the FDA requires: a second member's header inside the observations is an
//! error, not read as data.

use crate::sas::{self, NumberKind};
use crate::{Error, Result};

/// Header and observations come in records of this many bytes.
pub const RECORD: usize = 80;

const LIBRARY: &[u8] =
    b"HEADER RECORD*******LIBRARY HEADER RECORD!!!!!!!000000000000000000000000000000";
const LIBRARY_V8: &[u8] = b"HEADER RECORD*******LIBV8   HEADER RECORD!!!!!!!";
const MEMBER: &[u8] = b"HEADER RECORD*******MEMBER  HEADER RECORD!!!!!!!";
const DESCRIPTOR: &[u8] = b"HEADER RECORD*******DSCRPTR HEADER RECORD!!!!!!!";
const NAMESTR: &[u8] = b"HEADER RECORD*******NAMESTR HEADER RECORD!!!!!!!";
const OBS: &[u8] = b"HEADER RECORD*******OBS     HEADER RECORD!!!!!!!";
const MEMBER_V8: &[u8] = b"HEADER RECORD*******MEMBV8  HEADER RECORD!!!!!!!";
const DESCRIPTOR_V8: &[u8] = b"HEADER RECORD*******DSCPTV8 HEADER RECORD!!!!!!!";
const NAMESTR_V8: &[u8] = b"HEADER RECORD*******NAMSTV8 HEADER RECORD!!!!!!!";
const LABELS_V8: &[u8] = b"HEADER RECORD*******LABELV8 HEADER RECORD!!!!!!!";
const LABELS_V9: &[u8] = b"HEADER RECORD*******LABELV9 HEADER RECORD!!!!!!!";
const OBS_V8: &[u8] = b"HEADER RECORD*******OBSV8   HEADER RECORD!!!!!!!";

/// The most variables a version 5 NAMESTR header can count (four digits).
const MAX_VARIABLES: usize = 9999;

/// One variable as its NAMESTR describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Variable {
    pub name: String,
    pub label: String,
    pub numeric: bool,
    /// Bytes in each observation.
    pub length: usize,
    /// Offset in each observation.
    pub position: usize,
    /// The display format's name and width (`DATE9`), empty when none.
    pub format: String,
    pub kind: NumberKind,
}

/// The dataset a transport file holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub dataset: String,
    pub label: String,
    pub variables: Vec<Variable>,
    /// Bytes per observation.
    pub record_len: usize,
    /// Bytes from the file's start to the first observation.
    pub data_offset: usize,
}

fn text_field(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != 0)
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

fn be16(b: &[u8]) -> i64 {
    i64::from(i16::from_be_bytes([b[0], b[1]]))
}

fn be32(b: &[u8]) -> i64 {
    i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The header of a transport file from its first bytes: `Ok(None)` while `bytes` ends before the first
/// observation. Every check names the 80-byte record (1-based) or the variable.
pub fn parse_header(url: &str, bytes: &[u8]) -> Result<Option<Header>> {
    let at = |record: usize| format!("{url}: header record {record}");
    let record = |i: usize| bytes.get(i * RECORD..(i + 1) * RECORD);
    let Some(first) = record(0) else {
        // Too short to tell a version, but not too short to tell it is no transport file at all.
        let n = bytes.len().min(LIBRARY_V8.len());
        if bytes[..n] != LIBRARY[..n] && bytes[..n] != LIBRARY_V8[..n] {
            return Err(Error::bad_data(
                at(1),
                "not a SAS transport (XPORT) file: the first record is not the library header",
            ));
        }
        return Ok(None);
    };
    // Version 8 (SAS's %loc2xpt, V8 or V9): names up to 32 characters, labels up to 256 in a section of
    // their own, character values up to 32767 bytes; otherwise the version 5 layout under other names.
    let v8 = first.starts_with(LIBRARY_V8);
    let (member_h, descriptor_h, namestr_h, obs_h) = if v8 {
        (MEMBER_V8, DESCRIPTOR_V8, NAMESTR_V8, OBS_V8)
    } else {
        (MEMBER, DESCRIPTOR, NAMESTR, OBS)
    };
    if !v8 && !first.starts_with(LIBRARY) {
        return Err(Error::bad_data(
            at(1),
            "not a SAS transport (XPORT) file: the first record is not the library header",
        ));
    }
    let expect = |i: usize, start: &[u8], what: &str| -> Result<Option<()>> {
        match record(i) {
            None => Ok(None),
            Some(r) if r.starts_with(start) => Ok(Some(())),
            Some(_) => Err(Error::bad_data(
                at(i + 1),
                format!("expected the {what} here (a damaged or non-XPORT header)"),
            )),
        }
    };
    if expect(
        1,
        b"SAS     SAS     SASLIB  ",
        "library's first real header",
    )?
    .is_none()
        || record(2).is_none()
    {
        return Ok(None);
    }
    if expect(3, member_h, "member header")?.is_none() {
        return Ok(None);
    }
    let namestr_len = match record(3).map(|r| &r[74..78]) {
        Some(b"0140") => 140,
        Some(b"0136") => 136,
        _ => {
            return Err(Error::bad_data(
                at(4),
                "the member header's NAMESTR length is neither 140 nor 136",
            ));
        }
    };
    if expect(4, descriptor_h, "descriptor header")?.is_none()
        || expect(5, b"SAS     ", "member's first real header")?.is_none()
        || record(6).is_none()
        || expect(7, namestr_h, "NAMESTR header")?.is_none()
    {
        return Ok(None);
    }
    let (Some(member), Some(member2), Some(names)) = (record(5), record(6), record(7)) else {
        return Ok(None);
    };
    let count = std::str::from_utf8(&names[48..58])
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|&n| n <= MAX_VARIABLES)
        .ok_or_else(|| {
            Error::bad_data(
                at(8),
                "the NAMESTR header's variable count is not a number of at most 9999",
            )
        })?;
    if count == 0 {
        return Err(Error::bad_data(at(8), "the dataset has no variables"));
    }
    let namestr_bytes = (count * namestr_len).div_ceil(RECORD) * RECORD;
    let mut obs_header = 8 * RECORD + namestr_bytes;
    let Some(after) = bytes.get(obs_header..obs_header + RECORD) else {
        return Ok(None);
    };
    let mut long_labels: Vec<Option<String>> = vec![None; count];
    if v8 && (after.starts_with(LABELS_V8) || after.starts_with(LABELS_V9)) {
        match long_label_section(url, bytes, obs_header, count, after.starts_with(LABELS_V9))? {
            None => return Ok(None),
            Some((labels, end)) => {
                long_labels = labels;
                obs_header = end;
            }
        }
    }
    let Some(obs) = bytes.get(obs_header..obs_header + RECORD) else {
        return Ok(None);
    };
    if !obs.starts_with(obs_h) {
        return Err(Error::bad_data(
            at(obs_header / RECORD + 1),
            format!("expected the OBS header after {count} NAMESTRs (a damaged header)"),
        ));
    }
    // Version 5 is ASCII by its definition; version 8 carries the writing session's encoding, UTF-8 today.
    let header_text = |b: &[u8], what: &str, where_: String| -> Result<String> {
        let t = text_field(b);
        if v8 {
            return std::str::from_utf8(t)
                .map(str::to_string)
                .map_err(|_| Error::bad_data(where_, format!("the {what} is not UTF-8 text")));
        }
        if !t.is_ascii() {
            return Err(Error::bad_data(
                where_,
                format!("the {what} is not ASCII, as a version 5 transport file must be"),
            ));
        }
        Ok(String::from_utf8_lossy(t).into_owned())
    };
    let dataset = header_text(&member[8..if v8 { 40 } else { 16 }], "dataset name", at(6))?;
    let label = header_text(&member2[32..72], "dataset label", at(7))?;
    let mut variables = Vec::with_capacity(count);
    let mut record_len = 0usize;
    for i in 0..count {
        let n = &bytes[8 * RECORD + i * namestr_len..8 * RECORD + (i + 1) * namestr_len];
        let long = v8 && namestr_len == 140 && !text_field(&n[88..120]).is_empty();
        let name = header_text(
            if long { &n[88..120] } else { &n[8..16] },
            "variable name",
            format!("{url}: variable {}", i + 1),
        )?;
        let var = |what: String| format!("{url}: variable {} ({name}): {what}", i + 1);
        if name.is_empty() {
            return Err(Error::bad_data(
                format!("{url}: variable {}", i + 1),
                "the variable has no name",
            ));
        }
        let label = match long_labels[i].take() {
            Some(l) => l,
            None => header_text(
                &n[16..56],
                "label",
                format!("{url}: variable {} ({name})", i + 1),
            )?,
        };
        let numeric = match be16(&n[0..2]) {
            1 => true,
            2 => false,
            t => {
                return Err(Error::bad_data(
                    var(format!("type {t}")),
                    "a variable's type is 1 (numeric) or 2 (character)",
                ));
            }
        };
        let length = be16(&n[4..6]);
        let fits = if numeric {
            (2..=8).contains(&length)
        } else {
            (1..=if v8 { 32767 } else { 200 }).contains(&length)
        };
        if !fits {
            return Err(Error::bad_data(
                var(format!("length {length}")),
                "a numeric variable is 2 to 8 bytes and a character one 1 to 200 (version 5) or \
                 32767 (version 8)",
            ));
        }
        let position = be32(&n[84..88]);
        let length = length as usize;
        if position < 0 {
            return Err(Error::bad_data(
                var(format!("position {position}")),
                "a negative position in the observation",
            ));
        }
        let position = position as usize;
        let form = header_text(&n[56..64], "format name", var("format".into()))?;
        let width = be16(&n[64..66]);
        let format = if form.is_empty() || width <= 0 {
            form
        } else {
            format!("{form}{width}")
        };
        let kind = if numeric {
            sas::number_kind(&format)
        } else {
            NumberKind::Number
        };
        record_len = record_len.max(position + length);
        variables.push(Variable {
            name,
            label,
            numeric,
            length,
            position,
            format,
            kind,
        });
    }
    let total: usize = variables.iter().map(|v| v.length).sum();
    if total != record_len {
        return Err(Error::bad_data(
            format!("{url}: header"),
            format!(
                "the variables' positions and lengths do not tile the observation ({total} bytes of \
                 variables, observations of {record_len})"
            ),
        ));
    }
    Ok(Some(Header {
        dataset,
        label,
        variables,
        record_len,
        data_offset: obs_header + RECORD,
    }))
}

/// Receives each observation: the header, its number (from 1), its bytes.
pub type OnRecord<'a> = dyn FnMut(&Header, u64, &[u8]) -> Result<()> + 'a;

/// Version 8's long names and labels: (labels by variable, the offset after the section), `None` while the
/// section is incomplete. Each entry: the variable's number, the lengths of its name and label (and, in
/// LABELV9, of its format and informat names), then those texts; the section is padded to 80 bytes.
fn long_label_section(
    url: &str,
    bytes: &[u8],
    start: usize,
    count: usize,
    v9: bool,
) -> Result<Option<(Vec<Option<String>>, usize)>> {
    let at = |what: String| Error::bad_data(format!("{url}: long labels"), what);
    let entries = std::str::from_utf8(&bytes[start + 48..start + RECORD])
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|&n| n <= count)
        .ok_or_else(|| {
            at("the LABELV8 header's count is not a number of at most the variables".into())
        })?;
    let mut labels = vec![None; count];
    let mut pos = start + RECORD;
    let fixed = if v9 { 10 } else { 6 };
    for _ in 0..entries {
        let Some(head) = bytes.get(pos..pos + fixed) else {
            return Ok(None);
        };
        let number = be16(&head[0..2]);
        let lens: Vec<i64> = head[2..].chunks(2).map(be16).collect();
        if lens.iter().any(|&l| !(0..=256).contains(&l)) || !(1..=count as i64).contains(&number) {
            return Err(at(format!(
                "an entry for variable {number} with lengths {lens:?}: not a variable, or longer than 256"
            )));
        }
        let total: usize = lens.iter().map(|&l| l as usize).sum();
        let Some(texts) = bytes.get(pos + fixed..pos + fixed + total) else {
            return Ok(None);
        };
        let (name_len, label_len) = (lens[0] as usize, lens[1] as usize);
        let label = std::str::from_utf8(text_field(&texts[name_len..name_len + label_len]))
            .map_err(|_| at(format!("the label of variable {number} is not UTF-8 text")))?;
        labels[number as usize - 1] = Some(label.to_string());
        pos += fixed + total;
    }
    let end = start + RECORD + (pos - start - RECORD).div_ceil(RECORD) * RECORD;
    Ok(Some((labels, end)))
}

/// The most header bytes before the first observation (9999 NAMESTRs, and version 8's long labels).
pub const MAX_HEADER: usize = 9 * RECORD + MAX_VARIABLES * (140 + 10 + 3 * 256) + RECORD;

/// Observations of a transport file from its bytes as they come. Holds the header while it is incomplete,
/// then one observation plus 80 bytes of look-ahead: the blanks that pad the last 80-byte record are only
/// told from an observation of blanks at the end.
pub struct XptStream {
    url: String,
    header: Option<Header>,
    buf: Vec<u8>,
    /// Offset (from the first observation) of `buf[0]` once the header is read.
    buf_start: u64,
    /// Offset of the next observation.
    next: u64,
    /// Offset of the next 80-byte record to check for a second member's header.
    checked: u64,
    records: u64,
    total: u64,
}

impl XptStream {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_string(),
            header: None,
            buf: Vec::new(),
            buf_start: 0,
            next: 0,
            checked: 0,
            records: 0,
            total: 0,
        }
    }

    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// Feeds the next bytes; `on_record(header, n, bytes)` gets every observation (n from 1) known to be one.
    pub fn feed(&mut self, chunk: &[u8], on_record: &mut OnRecord<'_>) -> Result<()> {
        self.total += chunk.len() as u64;
        self.buf.extend_from_slice(chunk);
        if self.header.is_none() {
            match parse_header(&self.url, &self.buf)? {
                Some(h) => {
                    self.buf.drain(..h.data_offset);
                    self.header = Some(h);
                }
                None if self.buf.len() > MAX_HEADER => {
                    return Err(Error::bad_data(
                        format!("{}: header", self.url),
                        "no OBS header within the bytes the largest header can take",
                    ));
                }
                None => return Ok(()),
            }
        }
        self.check_members()?;
        let Some(h) = self.header.as_ref() else {
            return Ok(());
        };
        let len = h.record_len as u64;
        let end = self.buf_start + self.buf.len() as u64;
        // An observation with 80 bytes after it cannot be the end's padding.
        let keep = len.max(RECORD as u64);
        while end - self.next >= keep {
            let at = (self.next - self.buf_start) as usize;
            self.records += 1;
            on_record(h, self.records, &self.buf[at..at + h.record_len])?;
            self.next += len;
        }
        // Bytes both handed on and checked for a member header are done with.
        let done = self.next.min(self.checked) - self.buf_start;
        self.buf.drain(..done as usize);
        self.buf_start += done;
        Ok(())
    }

    /// A second member's header on an 80-byte boundary inside the observations: the file holds two
    /// datasets, and the second would otherwise be read as observations of the first.
    fn check_members(&mut self) -> Result<()> {
        let Some(h) = self.header.as_ref() else {
            return Ok(());
        };
        let base = h.data_offset as u64;
        // Records are 80-aligned from the file's start; the data start is itself aligned.
        let end = self.buf_start + self.buf.len() as u64;
        while self.checked + RECORD as u64 <= end {
            let at = (self.checked - self.buf_start) as usize;
            if self.buf[at..].starts_with(MEMBER) || self.buf[at..].starts_with(MEMBER_V8) {
                return Err(Error::bad_data(
                    format!("{}: byte {}", self.url, base + self.checked),
                    "a second dataset (member) begins here: one dataset per transport file, as the \
                     FDA requires; split the library into one file per dataset",
                ));
            }
            self.checked += RECORD as u64;
        }
        Ok(())
    }

    /// The last observations, after the final chunk: trailing observations of blanks inside the last
    /// 80-byte record are its padding. Returns the number of observations.
    pub fn finish(mut self, on_record: &mut OnRecord<'_>) -> Result<u64> {
        let Some(h) = self.header.take() else {
            return Err(Error::bad_data(
                format!("{}: header", self.url),
                format!(
                    "truncated: the file ends ({} bytes) before its header does",
                    self.total
                ),
            ));
        };
        if !self.total.is_multiple_of(RECORD as u64) {
            return Err(Error::bad_data(
                format!("{}: observation {}", self.url, self.records + 1),
                format!(
                    "truncated: {} bytes are not a whole number of 80-byte records",
                    self.total
                ),
            ));
        }
        let len = h.record_len;
        let tail = &self.buf[(self.next - self.buf_start) as usize..];
        let mut whole = tail.len() / len;
        let rest = &tail[whole * len..];
        if !rest.iter().all(|&b| b == b' ') {
            return Err(Error::bad_data(
                format!(
                    "{}: observation {}",
                    self.url,
                    self.records + whole as u64 + 1
                ),
                format!(
                    "the observation length ({len} bytes) does not divide the data: {} bytes are \
                     left that are not padding",
                    rest.len()
                ),
            ));
        }
        while whole > 0
            && tail[(whole - 1) * len..whole * len]
                .iter()
                .all(|&b| b == b' ')
        {
            whole -= 1;
        }
        for i in 0..whole {
            self.records += 1;
            on_record(&h, self.records, &tail[i * len..(i + 1) * len])?;
        }
        Ok(self.records)
    }
}

/// One variable's value as text (`None` for a SAS missing number or a blank character value); `Err` holds
/// the defect of a character value that is not UTF-8 text.
pub fn value_text<'b>(
    v: &Variable,
    record: &'b [u8],
    number: &'b mut String,
) -> std::result::Result<Option<&'b str>, &'static str> {
    let bytes = &record[v.position..v.position + v.length];
    if v.numeric {
        if sas::is_missing(bytes) {
            return Ok(None);
        }
        sas::number_text(sas::ibm_to_f64(bytes), v.kind, number);
        Ok(Some(number.as_str()))
    } else {
        let t = text_field(bytes);
        if t.is_empty() {
            return Ok(None);
        }
        std::str::from_utf8(t)
            .map(Some)
            .map_err(|_| "is not UTF-8 text")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A version 5 transport file, written as SAS lays it out: (name, label, numeric, length, format).
    pub(crate) fn write(
        vars: &[(&str, &str, bool, usize, &str)],
        rows: &[Vec<Vec<u8>>],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let pad = |out: &mut Vec<u8>| {
            while !out.len().is_multiple_of(RECORD) {
                out.push(b' ');
            }
        };
        let field = |s: &str, n: usize| {
            let mut b = s.as_bytes().to_vec();
            b.resize(n, b' ');
            b
        };
        out.extend_from_slice(LIBRARY);
        out.extend_from_slice(b"  ");
        out.extend(field("SAS     SAS     SASLIB  9.4     Linux", 80));
        out.extend(field("", 80));
        out.extend_from_slice(MEMBER);
        out.extend_from_slice(b"000000000000000001600000000140  ");
        out.extend_from_slice(DESCRIPTOR);
        out.extend_from_slice(b"000000000000000000000000000000  ");
        out.extend(field("SAS     ADSL    SASDATA 9.4     Linux", 80));
        let mut m2 = field("", 32);
        m2.extend(field("Subject-Level Analysis Dataset", 48));
        out.extend(m2);
        out.extend_from_slice(NAMESTR);
        out.extend(field(
            &format!("000000{:04}00000000000000000000", vars.len()),
            32,
        ));
        let mut pos = 0i32;
        for (i, (name, label, numeric, len, format)) in vars.iter().enumerate() {
            let mut n = Vec::with_capacity(140);
            n.extend((if *numeric { 1i16 } else { 2 }).to_be_bytes());
            n.extend(0i16.to_be_bytes());
            n.extend((*len as i16).to_be_bytes());
            n.extend((i as i16 + 1).to_be_bytes());
            n.extend(field(name, 8));
            n.extend(field(label, 40));
            n.extend(field(format, 8));
            n.extend(0i16.to_be_bytes()); // width
            n.extend([0u8; 6]);
            n.extend(field("", 8));
            n.extend([0u8; 4]);
            n.extend(pos.to_be_bytes());
            n.resize(140, 0);
            out.extend(n);
            pos += *len as i32;
        }
        pad(&mut out);
        out.extend_from_slice(OBS);
        out.extend_from_slice(b"000000000000000000000000000000  ");
        for r in rows {
            for v in r {
                out.extend_from_slice(v);
            }
        }
        pad(&mut out);
        out
    }

    pub(crate) fn num(x: f64) -> Vec<u8> {
        sas::f64_to_ibm(x).to_vec()
    }

    pub(crate) fn chr(s: &str, n: usize) -> Vec<u8> {
        let mut b = s.as_bytes().to_vec();
        b.resize(n, b' ');
        b
    }

    fn read(bytes: &[u8], chunk: usize) -> Result<(Header, Vec<Vec<Option<String>>>)> {
        let mut s = XptStream::new("file:///t.xpt");
        let mut rows = Vec::new();
        let mut on = |h: &Header, _n: u64, r: &[u8]| -> Result<()> {
            let mut number = String::new();
            rows.push(
                h.variables
                    .iter()
                    .map(|v| {
                        value_text(v, r, &mut number)
                            .ok()
                            .flatten()
                            .map(str::to_string)
                    })
                    .collect(),
            );
            Ok(())
        };
        for c in bytes.chunks(chunk) {
            s.feed(c, &mut on)?;
        }
        let h = s.header().cloned();
        s.finish(&mut on)?;
        Ok((h.unwrap_or_else(|| unreachable!()), rows))
    }

    fn sample() -> Vec<u8> {
        let vars = [
            ("USUBJID", "Unique Subject Identifier", false, 11, ""),
            ("AGE", "Age", true, 8, ""),
            ("TRTSDT", "Date of First Exposure", true, 8, "DATE"),
        ];
        let rows = vec![
            vec![chr("01-701-1015", 11), num(63.0), num(19725.0)],
            vec![
                chr("01-701-1023", 11),
                b"A\0\0\0\0\0\0\0".to_vec(),
                b".\0\0\0\0\0\0\0".to_vec(),
            ],
            vec![chr("", 11), num(71.5), num(-1.0)],
        ];
        write(&vars, &rows)
    }

    #[test]
    fn reads_values_labels_dates_and_missing_in_any_chunking() {
        let bytes = sample();
        for chunk in [1, 7, 80, 81, 4096] {
            let (h, rows) = read(&bytes, chunk).unwrap();
            assert_eq!(h.dataset, "ADSL");
            assert_eq!(h.variables[0].label, "Unique Subject Identifier");
            assert_eq!(h.record_len, 27);
            assert_eq!(
                rows.len(),
                3,
                "chunk {chunk}: the blank padding is no observation"
            );
            let s = |x: &str| Some(x.to_string());
            assert_eq!(rows[0], vec![s("01-701-1015"), s("63"), s("2014-01-02")]);
            assert_eq!(rows[1], vec![s("01-701-1023"), None, None]);
            assert_eq!(rows[2], vec![None, s("71.5"), s("1959-12-31")]);
        }
    }

    #[test]
    fn bad_files_name_the_record_or_variable() {
        let bytes = sample();
        let err = |b: &[u8]| read(b, 4096).unwrap_err().to_string();
        assert!(err(&bytes[..bytes.len() - 3]).contains("truncated"));
        assert!(err(&bytes[..500]).contains("before its header does"));
        let mut wrong = bytes.clone();
        wrong[0] = b'X';
        assert!(err(&wrong).contains("first record is not the library header"));
        // a version 8 library header over version 5 records: the member header is then the wrong one
        let mut v8 = bytes.clone();
        v8[..LIBRARY_V8.len()].copy_from_slice(LIBRARY_V8);
        assert!(err(&v8).contains("header record 4"), "{}", err(&v8));
        let mut label = bytes.clone();
        let at = 8 * RECORD + 140 + 16; // the second variable's label
        label[at..at + 2].copy_from_slice("é".as_bytes());
        let e = err(&label);
        assert!(
            e.contains("variable 2 (AGE)") && e.contains("not ASCII"),
            "{e}"
        );
        let mut length = bytes.clone();
        length[8 * RECORD + 140 + 4..8 * RECORD + 140 + 6].copy_from_slice(&9i16.to_be_bytes());
        let e = err(&length);
        assert!(
            e.contains("variable 2 (AGE)") && e.contains("length 9"),
            "{e}"
        );
        // three observations of 27 bytes (81), padded to 160: text in the last 25, which no observation fills
        let mut ragged = bytes.clone();
        let data = ragged.len() - 2 * RECORD;
        ragged[data + 140..data + 150].copy_from_slice(b"XXXXXXXXXX");
        let e = err(&ragged);
        assert!(
            e.contains("does not divide") && e.contains("observation 6"),
            "{e}"
        );
        let mut two = bytes.clone();
        two.extend_from_slice(MEMBER);
        two.extend_from_slice(b"000000000000000001600000000140  ");
        assert!(err(&two).contains("second dataset"));
    }

    fn fixture(name: &str) -> Vec<u8> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/xpt");
        std::fs::read(dir.join(name)).unwrap()
    }

    /// Version 8, as pyreadstat writes it (tests/fixtures/xpt/make.py): a long name, a long label in the
    /// LABELV8 section and a 300-byte value read as pyreadstat reads them; the pilot's ADSL reads the same in
    /// v8 as in v5.
    #[test]
    fn version_8_files_read_as_pyreadstat_reads_them() {
        let (h, rows) = read(&fixture("small_v8.xpt"), 13).unwrap();
        let want: serde_json::Value = serde_json::from_slice(&fixture("small_v8.json")).unwrap();
        assert_eq!(h.dataset, want["dataset"].as_str().unwrap());
        let names: Vec<&str> = h.variables.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(serde_json::json!(names), want["columns"]);
        let labels: Vec<&str> = h.variables.iter().map(|v| v.label.as_str()).collect();
        assert_eq!(serde_json::json!(labels), want["labels"]);
        assert_eq!(serde_json::json!(rows), want["rows"]);
        assert_eq!(h.variables[2].length, 300);
        let v5 = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../data/examples/cdiscpilot/adsl.xpt"),
        )
        .unwrap();
        let (h5, rows5) = read(&v5, 4096).unwrap();
        let (h8, rows8) = read(&fixture("adsl_v8.xpt"), 4096).unwrap();
        assert_eq!(rows8.len(), 254);
        assert_eq!(rows8, rows5);
        let labels = |h: &Header| {
            h.variables
                .iter()
                .map(|v| (v.name.clone(), v.label.clone(), v.kind))
                .collect::<Vec<_>>()
        };
        assert_eq!(labels(&h8), labels(&h5));
    }
}
