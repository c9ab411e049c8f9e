//! Streaming scans of source files as their bytes pass through ingestion: the record count, and the
//! header (or schema, or first record's keys) checked against the dataset contract. Nothing here keeps
//! more than a bounded buffer, whatever the file size; nothing reads values beyond the header.

use std::io::Write;

use trialflow_core::lake::SourceFormat;
use trialflow_core::{Error, Result};

/// What a finished scan found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scanned {
    pub rows: u64,
    pub extra_columns: Vec<String>,
}

fn check_columns(
    url: &str,
    columns: &[String],
    required: &[String],
    what: &str,
) -> Result<Vec<String>> {
    for col in required {
        let mut at = columns.iter().enumerate().filter(|(_, h)| *h == col);
        if let (Some((a, _)), Some((b, _))) = (at.next(), at.next()) {
            return Err(Error::bad_data(
                url,
                format!(
                    "column `{col}` is in the {what} twice (columns {} and {}): which one holds the data is not known",
                    a + 1,
                    b + 1
                ),
            ));
        }
    }
    for col in required {
        if !columns.iter().any(|h| h == col) {
            return Err(Error::bad_data(
                url,
                format!(
                    "required column `{col}` is missing (the {what} has {} columns)",
                    columns.len()
                ),
            ));
        }
    }
    Ok(columns
        .iter()
        .filter(|h| !required.contains(h))
        .cloned()
        .collect())
}

/// One scan per source format.
pub enum Scanner {
    Csv(CsvScan),
    Gzip(Box<flate2::write::MultiGzDecoder<CsvSink>>, String),
    Zstd(ZstdScan),
    Ndjson(NdjsonScan),
    Parquet(ParquetScan),
    Xpt(XptScan),
    DatasetJson(DatasetJsonScan),
}

impl Scanner {
    pub fn new(
        format: SourceFormat,
        url: &str,
        required: &[String],
        delimiter: u8,
        quote: u8,
    ) -> Result<Self> {
        let csv = || CsvScan::new(url, required, delimiter, quote);
        Ok(match format {
            SourceFormat::Csv => Scanner::Csv(csv()),
            SourceFormat::CsvGzip => Scanner::Gzip(
                Box::new(flate2::write::MultiGzDecoder::new(CsvSink {
                    scan: csv(),
                    error: None,
                })),
                url.to_string(),
            ),
            SourceFormat::CsvZstd => Scanner::Zstd(ZstdScan::new(url, csv())?),
            SourceFormat::Ndjson => Scanner::Ndjson(NdjsonScan::new(url, required)),
            SourceFormat::Parquet => Scanner::Parquet(ParquetScan::new(url, required)),
            SourceFormat::Xpt => Scanner::Xpt(XptScan::new(url, required)),
            SourceFormat::DatasetJson | SourceFormat::DatasetNdjson => {
                Scanner::DatasetJson(DatasetJsonScan::new(url, required, format)?)
            }
        })
    }

    pub fn feed(&mut self, chunk: &[u8]) -> Result<()> {
        match self {
            Scanner::Csv(s) => s.feed(chunk),
            Scanner::Gzip(d, url) => match d.write_all(chunk) {
                Ok(()) => Ok(()),
                Err(e) => Err(d.get_mut().error.take().unwrap_or_else(|| {
                    Error::bad_data(url.as_str(), format!("not valid gzip: {e}"))
                })),
            },
            Scanner::Zstd(s) => s.feed(chunk),
            Scanner::Ndjson(s) => s.feed(chunk),
            Scanner::Parquet(s) => {
                s.feed(chunk);
                Ok(())
            }
            Scanner::Xpt(s) => s.feed(chunk),
            Scanner::DatasetJson(s) => s.feed(chunk),
        }
    }

    pub fn finish(self) -> Result<Scanned> {
        let csv_done = |mut s: CsvScan| -> Result<Scanned> {
            s.finish()?;
            Ok(Scanned {
                rows: s.rows,
                extra_columns: s.extra_columns,
            })
        };
        match self {
            Scanner::Csv(s) => csv_done(s),
            Scanner::Gzip(mut d, url) => {
                let truncated = |e: std::io::Error| {
                    Error::bad_data(url.as_str(), format!("truncated or corrupt gzip: {e}"))
                };
                d.try_finish().map_err(truncated)?;
                let sink = d.finish().map_err(truncated)?;
                if let Some(e) = sink.error {
                    return Err(e);
                }
                csv_done(sink.scan)
            }
            Scanner::Zstd(s) => {
                let scan = s.finish()?;
                csv_done(scan)
            }
            Scanner::Ndjson(s) => s.finish(),
            Scanner::Parquet(s) => s.finish(),
            Scanner::Xpt(s) => s.finish(),
            Scanner::DatasetJson(s) => s.finish(),
        }
    }
}

/// A CSV scan as a `Write` target for push decoders; the scan's own error is kept to report it as is.
pub struct CsvSink {
    scan: CsvScan,
    error: Option<Error>,
}

impl Write for CsvSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.scan.feed(buf) {
            Ok(()) => Ok(buf.len()),
            Err(e) => {
                // the first error says what went wrong; later writes only hear that the scan stopped
                self.error.get_or_insert(e);
                Err(std::io::Error::other("CSV scan failed"))
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// zstd frames decoded incrementally; a stream that ends inside a frame is truncated.
pub struct ZstdScan {
    url: String,
    decoder: zstd::stream::raw::Decoder<'static>,
    out: Vec<u8>,
    scan: CsvScan,
    /// The decoder's hint after the last input: 0 when a frame just ended.
    pending: usize,
    seen_input: bool,
}

impl ZstdScan {
    fn new(url: &str, scan: CsvScan) -> Result<Self> {
        Ok(Self {
            url: url.to_string(),
            decoder: zstd::stream::raw::Decoder::new()
                .map_err(|e| Error::Internal(format!("zstd: cannot create a decoder: {e}")))?,
            out: vec![0; 128 * 1024],
            scan,
            pending: 0,
            seen_input: false,
        })
    }

    fn feed(&mut self, mut input: &[u8]) -> Result<()> {
        use zstd::stream::raw::Operation;
        if input.is_empty() {
            return Ok(());
        }
        self.seen_input = true;
        // Until the input is used up and the decoder leaves room in the output (nothing held back).
        loop {
            let status = self
                .decoder
                .run_on_buffers(input, &mut self.out)
                .map_err(|e| Error::bad_data(self.url.as_str(), format!("not valid zstd: {e}")))?;
            input = &input[status.bytes_read..];
            self.pending = status.remaining;
            self.scan.feed(&self.out[..status.bytes_written])?;
            if input.is_empty() && status.bytes_written < self.out.len() {
                break;
            }
            if status.bytes_read == 0 && status.bytes_written == 0 {
                return Err(Error::bad_data(
                    self.url.as_str(),
                    "not valid zstd: no progress",
                ));
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<CsvScan> {
        if self.pending != 0 || !self.seen_input {
            return Err(Error::bad_data(
                self.url.as_str(),
                "truncated zstd: the data end inside a frame",
            ));
        }
        Ok(self.scan)
    }
}

/// Longest NDJSON line held while scanning (the first record's, for its keys; later lines are only
/// checked for being blank, so a line of any length is not held).
const MAX_FIRST_RECORD: usize = 16 << 20;

/// Newline-delimited JSON: one object per non-blank line; the first object's keys are the columns.
pub struct NdjsonScan {
    url: String,
    required: Vec<String>,
    partial: Vec<u8>,
    /// After the first record: whether the unfinished line holds anything but whitespace.
    partial_text: bool,
    line: u64,
    rows: u64,
    extra_columns: Option<Vec<String>>,
}

impl NdjsonScan {
    fn new(url: &str, required: &[String]) -> Self {
        Self {
            url: url.to_string(),
            required: required.to_vec(),
            partial: Vec::new(),
            partial_text: false,
            line: 0,
            rows: 0,
            extra_columns: None,
        }
    }

    fn feed(&mut self, chunk: &[u8]) -> Result<()> {
        let mut rest = chunk;
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            let (head, tail) = rest.split_at(i);
            if self.extra_columns.is_some() {
                self.counted_line(head);
            } else if self.partial.is_empty() {
                self.line(head)?;
            } else {
                let mut l = std::mem::take(&mut self.partial);
                l.extend_from_slice(head);
                self.line(&l)?;
            }
            rest = &tail[1..];
        }
        if self.extra_columns.is_some() {
            self.partial_text |= !trialflow_core::text::is_blank(rest);
        } else {
            self.partial.extend_from_slice(rest);
            if self.partial.len() > MAX_FIRST_RECORD {
                return Err(Error::bad_data(
                    format!("{}:{}", self.url, self.line + 1),
                    format!("the first record is longer than {MAX_FIRST_RECORD} bytes"),
                ));
            }
        }
        Ok(())
    }

    /// A line after the first record: counted unless blank, never held.
    fn counted_line(&mut self, head: &[u8]) {
        self.line += 1;
        let text = std::mem::take(&mut self.partial_text) || !trialflow_core::text::is_blank(head);
        if text {
            self.rows += 1;
        }
    }

    fn line(&mut self, bytes: &[u8]) -> Result<()> {
        self.line += 1;
        let text = std::str::from_utf8(bytes).map_err(|_| {
            Error::bad_data(format!("{}:{}", self.url, self.line), "not UTF-8 text")
        })?;
        if trialflow_core::text::is_blank(text.as_bytes()) {
            return Ok(());
        }
        let text = text.trim_start_matches('\u{feff}').trim();
        self.rows += 1;
        if self.extra_columns.is_none() {
            let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                Error::bad_data(
                    format!("{}:{}", self.url, self.line),
                    format!("not a JSON object (column {})", e.column()),
                )
            })?;
            let serde_json::Value::Object(map) = v else {
                return Err(Error::bad_data(
                    format!("{}:{}", self.url, self.line),
                    "expected a JSON object per line",
                ));
            };
            let keys: Vec<String> = map.keys().cloned().collect();
            self.extra_columns = Some(check_columns(
                &self.url,
                &keys,
                &self.required,
                "first record",
            )?);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Scanned> {
        if self.extra_columns.is_some() {
            if self.partial_text {
                self.counted_line(b"");
            }
        } else if !self.partial.is_empty() {
            let l = std::mem::take(&mut self.partial);
            self.line(&l)?;
        }
        let Some(extra_columns) = self.extra_columns else {
            return Err(Error::bad_data(
                self.url.as_str(),
                "the file has no records",
            ));
        };
        Ok(Scanned {
            rows: self.rows,
            extra_columns,
        })
    }
}

/// Parquet keeps its schema and row count in a footer at the end: keep the last bytes as they pass.
/// A SAS transport file: the header's variables checked as soon as the header is in, observations counted
/// (`core::xport`, which also refuses a second dataset in the file and a truncated one).
pub struct XptScan {
    url: String,
    required: Vec<String>,
    stream: trialflow_core::xport::XptStream,
    extra_columns: Option<Vec<String>>,
}

impl XptScan {
    fn new(url: &str, required: &[String]) -> Self {
        Self {
            url: url.to_string(),
            required: required.to_vec(),
            stream: trialflow_core::xport::XptStream::new(url),
            extra_columns: None,
        }
    }

    fn check_header(&mut self) -> Result<()> {
        if self.extra_columns.is_none()
            && let Some(h) = self.stream.header()
        {
            let names: Vec<String> = h.variables.iter().map(|v| v.name.clone()).collect();
            self.extra_columns = Some(check_columns(
                &self.url,
                &names,
                &self.required,
                "transport file's variables",
            )?);
        }
        Ok(())
    }

    fn feed(&mut self, chunk: &[u8]) -> Result<()> {
        self.stream.feed(chunk, &mut |_, _, _| Ok(()))?;
        self.check_header()
    }

    fn finish(mut self) -> Result<Scanned> {
        self.check_header()?;
        let rows = self.stream.finish(&mut |_, _, _| Ok(()))?;
        Ok(Scanned {
            rows,
            extra_columns: self.extra_columns.unwrap_or_default(),
        })
    }
}

/// A Dataset-JSON file (either form), spooled to a local temporary file and read through once at the end
/// by the reader staging uses (`core::dsjson`): the schema checks, the columns and the row count. The
/// `.json` form's metadata may follow its rows, so nothing is known before the end.
pub struct DatasetJsonScan {
    url: String,
    required: Vec<String>,
    ndjson: bool,
    spool: std::io::BufWriter<std::fs::File>,
}

/// Bound on one row while scanning (staging applies `preprocessing.max_record_bytes`).
const MAX_DATASET_JSON_ROW: usize = 64 << 20;

struct CountRows<'a> {
    url: &'a str,
    required: &'a [String],
    extra_columns: Vec<String>,
}

impl trialflow_core::dsjson::Rows for CountRows<'_> {
    fn columns(&mut self, columns: &[trialflow_core::dsjson::Column]) -> Result<()> {
        let names: Vec<String> = columns.iter().map(|c| c.name.trim().to_string()).collect();
        self.extra_columns =
            check_columns(self.url, &names, self.required, "Dataset-JSON columns")?;
        Ok(())
    }

    fn row(&mut self, _line: u64, _row: &trialflow_core::dsjson::Row) -> Result<()> {
        Ok(())
    }
}

impl DatasetJsonScan {
    fn new(url: &str, required: &[String], format: SourceFormat) -> Result<Self> {
        let file = tempfile::tempfile().map_err(|e| {
            Error::infra(url, format!("cannot spool to a local temporary file: {e}"))
        })?;
        Ok(Self {
            url: url.to_string(),
            required: required.to_vec(),
            ndjson: format == SourceFormat::DatasetNdjson,
            spool: std::io::BufWriter::new(file),
        })
    }

    fn feed(&mut self, chunk: &[u8]) -> Result<()> {
        self.spool
            .write_all(chunk)
            .map_err(|e| Error::infra(self.url.as_str(), format!("spooling: {e}")))
    }

    fn finish(self) -> Result<Scanned> {
        use std::io::Seek;
        let url = self.url.as_str();
        let mut file = self
            .spool
            .into_inner()
            .map_err(|e| Error::infra(url, format!("spooling: {e}")))?;
        file.seek(std::io::SeekFrom::Start(0))
            .map_err(|e| Error::infra(url, format!("spooling: {e}")))?;
        let mut count = CountRows {
            url,
            required: &self.required,
            extra_columns: Vec::new(),
        };
        let reader = std::io::BufReader::with_capacity(1 << 16, file);
        let meta = if self.ndjson {
            trialflow_core::dsjson::read_ndjson(url, reader, MAX_DATASET_JSON_ROW, &mut count)?
        } else {
            trialflow_core::dsjson::read_json(url, reader, MAX_DATASET_JSON_ROW, &mut count)?
        };
        Ok(Scanned {
            rows: meta.records,
            extra_columns: count.extra_columns,
        })
    }
}

pub struct ParquetScan {
    url: String,
    required: Vec<String>,
    tail: std::collections::VecDeque<u8>,
}

/// Largest Parquet footer read (metadata of thousands of row groups fit).
const MAX_PARQUET_FOOTER: usize = 16 << 20;

impl ParquetScan {
    fn new(url: &str, required: &[String]) -> Self {
        Self {
            url: url.to_string(),
            required: required.to_vec(),
            tail: std::collections::VecDeque::new(),
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        let keep = MAX_PARQUET_FOOTER + 8;
        if chunk.len() >= keep {
            self.tail.clear();
            self.tail.extend(&chunk[chunk.len() - keep..]);
        } else {
            self.tail.extend(chunk);
            let over = self.tail.len().saturating_sub(keep);
            self.tail.drain(..over);
        }
    }

    fn finish(mut self) -> Result<Scanned> {
        let bad = |m: String| Error::bad_data(self.url.as_str(), m);
        let tail = self.tail.make_contiguous();
        let n = tail.len();
        if n < 12 || &tail[n - 4..] != b"PAR1" {
            return Err(bad("not a Parquet file (no PAR1 footer)".into()));
        }
        let meta_len =
            u32::from_le_bytes([tail[n - 8], tail[n - 7], tail[n - 6], tail[n - 5]]) as usize;
        if meta_len + 8 > n {
            return Err(bad(format!(
                "the Parquet footer ({meta_len} bytes) is larger than the file or than {MAX_PARQUET_FOOTER} bytes"
            )));
        }
        let meta = parquet::file::metadata::ParquetMetaDataReader::decode_metadata(
            &tail[n - 8 - meta_len..n - 8],
        )
        .map_err(|e| bad(format!("unreadable Parquet footer: {e}")))?;
        let schema =
            parquet::arrow::parquet_to_arrow_schema(meta.file_metadata().schema_descr(), None)
                .map_err(|e| bad(format!("Parquet schema: {e}")))?;
        let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let extra_columns = check_columns(&self.url, &columns, &self.required, "schema")?;
        for f in schema.fields() {
            if self.required.contains(f.name()) && f.data_type().is_nested() {
                return Err(bad(format!(
                    "column `{}` is {} (nested); expected a plain value column",
                    f.name(),
                    f.data_type()
                )));
            }
        }
        Ok(Scanned {
            rows: meta.file_metadata().num_rows().max(0) as u64,
            extra_columns,
        })
    }
}

/// Incremental CSV scan (csv-core, the csv crate's state machine): the header, checked against the
/// contract, and the number of records (quoted newlines count once). Reads no values.
///
/// Text with no quote character cannot hold a quoted newline, so between records such text is counted
/// line by line ([`CsvScan::count_lines`]), with the same rules csv-core's records get here, instead of
/// field by field: several times faster on the common export with no quoted fields. Any other text, and
/// the header, go through csv-core.
pub struct CsvScan {
    url: String,
    required: Vec<String>,
    rdr: csv_core::Reader,
    delimiter: u8,
    quote: u8,
    /// csv-core is between records: the last text it was given ended with a record's end.
    between_records: bool,
    out: Vec<u8>,
    out_len: usize,
    ends: Vec<usize>,
    ends_len: usize,
    header: Option<Vec<String>>,
    /// Part of the current record's text was dropped (so it is not a blank line).
    dropped: bool,
    /// An error ended the scan: its buffers hold a half-read record, so nothing more is read.
    failed: bool,
    pub rows: u64,
    pub extra_columns: Vec<String>,
}

impl CsvScan {
    pub fn new(url: &str, required: &[String], delimiter: u8, quote: u8) -> Self {
        Self {
            url: url.to_string(),
            required: required.to_vec(),
            rdr: csv_core::ReaderBuilder::new()
                .delimiter(delimiter)
                .quote(quote)
                .build(),
            delimiter,
            quote,
            between_records: true,
            out: vec![0; 64 * 1024],
            out_len: 0,
            ends: vec![0; 1024],
            ends_len: 0,
            header: None,
            dropped: false,
            failed: false,
            rows: 0,
            extra_columns: Vec::new(),
        }
    }

    pub fn feed(&mut self, input: &[u8]) -> Result<()> {
        let r = if self.failed {
            Err(self.stopped())
        } else {
            self.feed_records(input)
        };
        self.failed |= r.is_err();
        r
    }

    fn stopped(&self) -> Error {
        Error::bad_data(&self.url, "the scan stopped at an earlier error")
    }

    fn feed_records(&mut self, input: &[u8]) -> Result<()> {
        if input.is_empty() {
            return Ok(()); // to csv-core, empty input means the end of the data
        }
        if self.header.is_none() || memchr::memchr(self.quote, input).is_some() {
            self.read_records(input)?;
            return Ok(());
        }
        let mut rest = input;
        // csv-core finishes the record it is in; with no quote ahead, a line end ends it unless it is
        // inside a quoted field, which then spans the whole of this text.
        while !self.between_records {
            let Some(end) = memchr::memchr2(b'\n', b'\r', rest) else {
                self.read_records(rest)?;
                return Ok(());
            };
            self.read_records(&rest[..=end])?;
            rest = &rest[end + 1..];
        }
        let whole_lines = memchr::memrchr2(b'\n', b'\r', rest).map_or(0, |end| end + 1);
        self.count_lines(&rest[..whole_lines]);
        self.read_records(&rest[whole_lines..])?;
        Ok(())
    }

    /// Quote-free text of whole lines, between records: each line with text is a record, as csv-core
    /// reads it (`\r`, `\n` and `\r\n` end lines; empty lines are skipped), and [`CsvScan::record`]
    /// counts it unless it is blank.
    fn count_lines(&mut self, text: &[u8]) {
        let mut start = 0;
        for end in memchr::memchr2_iter(b'\n', b'\r', text) {
            let line = &text[start..end];
            start = end + 1;
            if !line.is_empty() && !self.blank_line(line) {
                self.rows += 1;
            }
        }
    }

    /// Whether [`CsvScan::record`] would find this quote-free line blank: one field (no delimiter), short
    /// enough for csv-core's output buffer, of whitespace only.
    fn blank_line(&self, line: &[u8]) -> bool {
        if line[0].is_ascii_graphic() {
            return false;
        }
        line.len() <= self.out.len()
            && memchr::memchr(self.delimiter, line).is_none()
            && trialflow_core::text::is_blank(line)
    }

    /// Gives csv-core `input`, growing or dropping its buffers as the header or a data record needs.
    fn read_records(&mut self, mut input: &[u8]) -> Result<()> {
        if input.is_empty() {
            return Ok(());
        }
        self.between_records = false;
        loop {
            let (res, nin, nout, nend) = self.rdr.read_record(
                input,
                &mut self.out[self.out_len..],
                &mut self.ends[self.ends_len..],
            );
            input = &input[nin..];
            self.out_len += nout;
            self.ends_len += nend;
            match res {
                csv_core::ReadRecordResult::InputEmpty => return Ok(()),
                csv_core::ReadRecordResult::OutputFull => {
                    if self.header.is_none() {
                        let n = self.out.len();
                        self.out.resize(n * 2, 0);
                    } else {
                        // Only the header's text (and whether a line is blank) is needed: a data
                        // field's bytes can be dropped.
                        self.out_len = 0;
                        self.dropped = true;
                    }
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    if self.header.is_none() {
                        let n = self.ends.len();
                        self.ends.resize(n * 2, 0);
                    } else {
                        self.ends_len = 0;
                        self.dropped = true;
                    }
                }
                csv_core::ReadRecordResult::Record => {
                    self.record()?;
                    self.out_len = 0;
                    self.ends_len = 0;
                    // csv-core skips the line ends that follow a record
                    self.between_records = input.iter().all(|&b| b == b'\n' || b == b'\r');
                }
                csv_core::ReadRecordResult::End => return Ok(()),
            }
        }
    }

    fn record(&mut self) -> Result<()> {
        if self.header.is_some() {
            let blank = !self.dropped
                && self.ends_len == 1
                && trialflow_core::text::is_blank(&self.out[..self.out_len]);
            self.dropped = false;
            // a line of spaces is no record (staging skips it the same way)
            if !blank {
                self.rows += 1;
            }
            return Ok(());
        }
        let mut headers = Vec::with_capacity(self.ends_len);
        let mut start = 0;
        for &end in &self.ends[..self.ends_len] {
            let raw = std::str::from_utf8(&self.out[start..end]).map_err(|_| {
                Error::bad_data(format!("{}:1", self.url), "the header is not UTF-8 text")
            })?;
            headers.push(
                trialflow_core::text::normalize(raw.trim())
                    .trim()
                    .to_string(),
            );
            start = end;
        }
        self.extra_columns = check_columns(&self.url, &headers, &self.required, "header")?;
        self.header = Some(headers);
        Ok(())
    }

    pub fn finish(&mut self) -> Result<()> {
        let r = if self.failed {
            Err(self.stopped())
        } else {
            self.finish_records()
        };
        self.failed |= r.is_err();
        r
    }

    fn finish_records(&mut self) -> Result<()> {
        // Empty input tells csv-core the data ended (a last record without a newline completes).
        loop {
            let (res, _, nout, nend) = self.rdr.read_record(
                &[],
                &mut self.out[self.out_len..],
                &mut self.ends[self.ends_len..],
            );
            self.out_len += nout;
            self.ends_len += nend;
            match res {
                csv_core::ReadRecordResult::Record => {
                    self.record()?;
                    self.out_len = 0;
                    self.ends_len = 0;
                }
                csv_core::ReadRecordResult::End | csv_core::ReadRecordResult::InputEmpty => break,
                csv_core::ReadRecordResult::OutputFull => {
                    let n = self.out.len();
                    self.out.resize(n * 2, 0);
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    let n = self.ends.len();
                    self.ends.resize(n * 2, 0);
                }
            }
        }
        if self.header.is_none() {
            return Err(Error::bad_data(
                &self.url,
                "the file is empty (no header row)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]], required: &[&str]) -> Result<CsvScan> {
        let req: Vec<String> = required.iter().map(|s| s.to_string()).collect();
        let mut s = CsvScan::new("file:///x.csv", &req, b',', b'"');
        for c in chunks {
            s.feed(c)?;
        }
        s.finish()?;
        Ok(s)
    }

    /// Found by `cargo xtask fuzz` (ingest_scan): a corrupt gzip stream whose decoder wrote again into the
    /// scan after the header had failed, so that the next record's field ends were read against the last
    /// one's text ("slice index starts at 156 but ends at 9").
    #[test]
    fn fuzz_finding_a_scan_written_to_after_it_failed_errors_and_never_panics() {
        let data = include_bytes!("../tests/fixtures/fuzz/ingest_scan-gzip-after-header-error.bin");
        let req = ["id".to_string(), "age".to_string()];
        let mut s =
            Scanner::new(SourceFormat::CsvGzip, "file:///x.csv.gz", &req, b',', b'"').unwrap();
        let fed = data[2..].chunks(64).try_for_each(|part| s.feed(part));
        assert!(fed.is_err() || s.finish().is_err());
        // the same bytes as plain CSV, fed again after an error
        let mut s = CsvScan::new("file:///x.csv", &req, b',', b'"');
        let first = s.feed(b"a,b\n1,2\n");
        assert!(first.is_err(), "the header lacks `id`");
        assert!(s.feed(b"x,y,z\n").is_err() && s.finish().is_err());
    }

    #[test]
    fn missing_required_column_names_source_and_column() {
        let e = scan(&[b"a,b\n1,2\n"], &["a", "c"]).err().unwrap();
        assert_eq!(e.kind(), trialflow_core::ErrorKind::BadData);
        let m = e.to_string();
        assert!(m.contains("file:///x.csv") && m.contains("`c`"), "{m}");
    }

    #[test]
    fn counts_records_not_lines_across_chunk_boundaries() {
        let data: &[u8] = b"\xef\xbb\xbfa,b,z\r\n1,\"two\nlines\",3\r\n4,5,6";
        for cut in 0..data.len() {
            let (x, y) = data.split_at(cut);
            let s = scan(&[x, y], &["a"]).unwrap();
            assert_eq!(s.rows, 2, "cut at {cut}");
            assert_eq!(s.extra_columns, vec!["b".to_string(), "z".to_string()]);
        }
        assert!(scan(&[b""], &[]).is_err(), "an empty file has no header");
        assert_eq!(scan(&[b"a\n"], &["a"]).unwrap().rows, 0);
    }

    /// Rows of `data` cut into `chunks` pieces at the given points, with either delimiter.
    fn rows_when_cut(data: &[u8], cuts: &[usize], delimiter: u8) -> u64 {
        let mut s = CsvScan::new("file:///x.csv", &[], delimiter, b'"');
        let mut start = 0;
        for &cut in cuts.iter().chain([&data.len()]) {
            let cut = cut.clamp(start, data.len());
            s.feed(&data[start..cut]).unwrap();
            start = cut;
        }
        s.finish().unwrap();
        s.rows
    }

    /// The line-by-line count of quote-free text agrees with csv-core's (which reads the whole file when
    /// it comes as one piece, header and all), whatever the text and wherever the pieces are cut: random
    /// text of quotes, delimiters, every kind of line end, blanks, non-ASCII and invisible characters.
    #[test]
    fn quote_free_text_counts_as_csv_core_counts_it() {
        let pieces: [&[u8]; 13] = [
            b"a",
            b"7",
            b" ",
            b"\t",
            b",",
            b"\"",
            b"\n",
            b"\r",
            b"\r\n",
            b"\n\n",
            "\u{e9}".as_bytes(),
            "\u{200b}".as_bytes(),
            "\u{feff}".as_bytes(),
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |below: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % below as u64) as usize
        };
        let mut fast_path_used = 0;
        for case in 0..4000 {
            let quotes = case % 3 == 0;
            let delimiter = if case % 2 == 0 { b',' } else { b'\t' };
            let mut data = b"h1,h2\n".to_vec();
            for _ in 0..next(120) {
                let piece = pieces[next(pieces.len())];
                if quotes || piece != b"\"" {
                    data.extend_from_slice(piece);
                }
            }
            let whole = rows_when_cut(&data, &[], delimiter);
            let cuts: Vec<usize> = {
                let mut c: Vec<usize> = (0..1 + next(4)).map(|_| next(data.len() + 1)).collect();
                c.sort_unstable();
                c
            };
            assert_eq!(
                rows_when_cut(&data, &cuts, delimiter),
                whole,
                "case {case}: {:?} cut at {cuts:?}",
                String::from_utf8_lossy(&data)
            );
            fast_path_used += usize::from(!quotes && cuts.first().is_some_and(|&c| c >= 6));
        }
        assert!(fast_path_used > 1000);
        // a blank line too long for csv-core's buffer is a record either way (csv-core drops its text)
        let mut long = b"h\nx\n".to_vec();
        long.extend(std::iter::repeat_n(b' ', 70_000));
        long.extend_from_slice(b"\n  \ny\n");
        assert_eq!(rows_when_cut(&long, &[], b','), 3);
        assert_eq!(rows_when_cut(&long, &[4], b','), 3);
    }

    /// After a record's end, quote-free text skips csv-core; after an unclosed quote it cannot.
    #[test]
    fn the_line_count_takes_over_only_between_records() {
        let mut s = CsvScan::new("file:///x.csv", &[], b',', b'"');
        s.feed(b"a,b\n\"1\n").unwrap();
        assert!(!s.between_records, "inside a quoted field");
        s.feed(b"2\n3,4\n5,6\n").unwrap();
        assert!(!s.between_records, "still inside it");
        s.feed(b"\",7\n8,9\r\n").unwrap();
        assert!(s.between_records);
        s.feed(b"\n10,11\n12").unwrap();
        s.finish().unwrap();
        assert_eq!(s.rows, 4);
    }

    #[test]
    fn long_headers_and_fields_grow_or_drop_buffers() {
        let header: Vec<String> = (0..3000).map(|i| format!("column_{i}")).collect();
        let mut data = header.join(",").into_bytes();
        data.extend_from_slice(b"\n");
        data.extend(std::iter::repeat_n(b'x', 200_000));
        data.extend_from_slice(b"\n");
        let s = scan(&[&data], &["column_2999"]).unwrap();
        assert_eq!(s.rows, 1);
        assert_eq!(s.header.unwrap().len(), 3000);
    }

    fn scan_format(format: SourceFormat, data: &[u8], required: &[&str]) -> Result<Scanned> {
        let req: Vec<String> = required.iter().map(|s| s.to_string()).collect();
        let mut s = Scanner::new(format, "file:///x", &req, b',', b'"')?;
        // odd chunk sizes, so that every decoder sees frames and lines split across chunks
        for c in data.chunks(7) {
            s.feed(c)?;
        }
        s.finish()
    }

    const CSV: &[u8] = b"id,age,x\n1,61,a\n2,,\"b\nc\"\n3,70,z\n";

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_and_zstd_stream_through_the_csv_scan_and_truncation_is_caught() {
        let gz = gzip(CSV);
        let s = scan_format(SourceFormat::CsvGzip, &gz, &["id", "age"]).unwrap();
        assert_eq!(
            (s.rows, s.extra_columns.clone()),
            (3, vec!["x".to_string()])
        );
        // two concatenated members are one stream (as gzip -c a b > ab.gz makes)
        let mut two = gzip(b"id,age\n1,2\n");
        two.extend(gzip(b"3,4\n"));
        assert_eq!(
            scan_format(SourceFormat::CsvGzip, &two, &["id"])
                .unwrap()
                .rows,
            2
        );
        let e = scan_format(SourceFormat::CsvGzip, &gz[..gz.len() - 5], &["id"]).unwrap_err();
        assert!(e.to_string().contains("gzip"), "{e}");
        let e = scan_format(SourceFormat::CsvGzip, CSV, &["id"]).unwrap_err();
        assert!(e.to_string().contains("gzip"), "{e}");

        let zst = zstd::stream::encode_all(CSV, 3).unwrap();
        assert_eq!(
            scan_format(SourceFormat::CsvZstd, &zst, &["id"])
                .unwrap()
                .rows,
            3
        );
        let e = scan_format(SourceFormat::CsvZstd, &zst[..zst.len() - 3], &["id"]).unwrap_err();
        assert!(e.to_string().contains("truncated zstd"), "{e}");
        let e = scan_format(SourceFormat::CsvZstd, CSV, &["id"]).unwrap_err();
        assert!(e.to_string().contains("zstd"), "{e}");
    }

    #[test]
    fn ndjson_counts_objects_and_checks_the_first_records_keys() {
        let data =
            b"{\"id\": 1, \"age\": 61, \"x\": true}\n\n{\"id\": 2}\r\n{\"id\": 3, \"age\": null}";
        let s = scan_format(SourceFormat::Ndjson, data, &["id", "age"]).unwrap();
        assert_eq!((s.rows, s.extra_columns), (3, vec!["x".to_string()]));
        let e = scan_format(SourceFormat::Ndjson, data, &["id", "sex"]).unwrap_err();
        assert!(e.to_string().contains("`sex`"), "{e}");
        let e = scan_format(SourceFormat::Ndjson, b"{\"id\": 1}\n[1, 2]\n", &["id"]);
        assert_eq!(
            e.unwrap().rows,
            2,
            "only the first record is parsed at ingest"
        );
        let e = scan_format(SourceFormat::Ndjson, b"\n{oops\n", &["id"]).unwrap_err();
        assert!(e.to_string().contains("file:///x:2"), "{e}");
        assert!(scan_format(SourceFormat::Ndjson, b"\n\n", &["id"]).is_err());
    }

    #[test]
    fn parquet_footer_gives_rows_and_schema() {
        use arrow::array::{Float64Array, RecordBatch, StringArray};
        use arrow::datatypes::{DataType, Field, Schema};
        use std::sync::Arc;
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("age", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["a", "b", "c", "d"])),
                Arc::new(Float64Array::from(vec![
                    Some(61.0),
                    None,
                    Some(70.0),
                    Some(1.0),
                ])),
            ],
        )
        .unwrap();
        let bytes = trialflow_core::table::encode_parquet(schema, &[batch]).unwrap();
        let s = scan_format(SourceFormat::Parquet, &bytes, &["id", "age"]).unwrap();
        assert_eq!((s.rows, s.extra_columns.len()), (4, 0));
        let e = scan_format(SourceFormat::Parquet, &bytes, &["id", "sex"]).unwrap_err();
        assert!(
            e.to_string().contains("`sex`") && e.to_string().contains("schema"),
            "{e}"
        );
        let e = scan_format(SourceFormat::Parquet, CSV, &["id"]).unwrap_err();
        assert!(e.to_string().contains("not a Parquet file"), "{e}");
        let e = scan_format(SourceFormat::Parquet, &bytes[..bytes.len() - 1], &["id"]).unwrap_err();
        assert!(e.to_string().contains("Parquet"), "{e}");
    }

    fn pilot(name: &str) -> Vec<u8> {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/examples/cdiscpilot");
        std::fs::read(dir.join(name)).unwrap()
    }

    #[test]
    fn sas_transport_files_are_counted_and_their_variables_checked() {
        let xpt = pilot("adsl.xpt");
        let s = scan_format(SourceFormat::Xpt, &xpt, &["USUBJID", "AGE"]).unwrap();
        assert_eq!(s.rows, 254);
        assert_eq!(s.extra_columns.len(), 47);
        let e = scan_format(SourceFormat::Xpt, &xpt, &["USUBJID", "age"]).unwrap_err();
        assert!(e.to_string().contains("`age` is missing"), "{e}");
        let e = scan_format(SourceFormat::Xpt, &xpt[..xpt.len() - 80], &["USUBJID"]);
        // a whole 80-byte record less: observations cut short, which the record length does not divide
        assert!(e.is_err(), "{e:?}");
        let e = scan_format(SourceFormat::Xpt, &xpt[..xpt.len() - 5], &["USUBJID"]).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        let e = scan_format(SourceFormat::Xpt, CSV, &["id"]).unwrap_err();
        assert!(e.to_string().contains("not a SAS transport"), "{e}");
    }

    #[test]
    fn dataset_json_files_are_counted_in_both_forms_and_checked_against_the_schema() {
        for (format, name) in [
            (SourceFormat::DatasetJson, "adsl.json"),
            (SourceFormat::DatasetNdjson, "adsl.ndjson"),
        ] {
            let data = pilot(name);
            let s = scan_format(format, &data, &["USUBJID", "AGE"]).unwrap();
            assert_eq!(s.rows, 254, "{name}");
            let e = scan_format(format, &data, &["age"]).unwrap_err();
            assert!(e.to_string().contains("`age` is missing"), "{name}: {e}");
            let cut = &data[..data.len() * 2 / 3];
            assert!(
                scan_format(format, cut, &["USUBJID"]).is_err(),
                "{name}: truncated"
            );
        }
        let text = String::from_utf8(pilot("adsl.json")).unwrap();
        let e = scan_format(
            SourceFormat::DatasetJson,
            text.replacen("\"1.1.0\"", "\"2.0\"", 1).as_bytes(),
            &["USUBJID"],
        )
        .unwrap_err();
        assert!(e.to_string().contains("datasetJSONVersion"), "{e}");
        let e = scan_format(SourceFormat::DatasetJson, CSV, &["id"]).unwrap_err();
        assert!(e.to_string().contains("not a readable Dataset-JSON"), "{e}");
    }
}
