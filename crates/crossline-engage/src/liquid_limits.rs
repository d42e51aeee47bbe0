//! Bounds on what rendering one Liquid template may cost.
//!
//! A template is written by a workspace's marketer and rendered on the server every other
//! workspace shares, for every recipient. Liquid itself has no bound: `{% for i in (1..300000000) %}`
//! builds the whole range first, a nested loop runs for hours, `{% assign s = s | append: s %}` in
//! a loop doubles a string thirty times, and a capture can capture itself twice. So, here:
//!
//! - every pass of a `for` or `tablerow` loop runs a hidden `{% crossline_loop %}` tag (inserted
//!   at compile time, [`LOOP_TAG`]) that counts it against [`MAX_LOOPS`] per rendered field;
//! - a range's bounds must be whole numbers written in the template, at most [`MAX_RANGE`] apart
//!   (checked at compile time, see `template.rs`);
//! - every filter's result is checked against [`MAX_VALUE_BYTES`] and [`MAX_ITEMS`]; `replace`,
//!   `replace_first` and `join` are computed here, their size known before it is allocated;
//! - a capture is rendered into a writer that stops at [`MAX_VALUE_BYTES`], and a field's output
//!   at [`MAX_OUTPUT_BYTES`] ([`CappedWriter`]).
//!
//! Past any bound the render fails with a message saying which; the delivery fails with it.

use liquid_core::model::{KString, Value, ValueView};
use liquid_core::parser::{FilterArguments, ParameterReflection};
use liquid_core::{
    BlockReflection, Error, Expression, Filter, FilterReflection, Language, ParseBlock, ParseFilter, ParseTag,
    Renderable, Result, Runtime, TagBlock, TagReflection, TagTokenIter, Template,
};
use std::cell::Cell;
use std::fmt;
use std::io::Write;

/// Loop passes one rendered field may make, over all its loops.
pub const MAX_LOOPS: u32 = 10_000;
/// The widest range a loop may walk (`(1..10001)`).
pub const MAX_RANGE: i64 = 10_000;
/// The largest string a filter or a capture may make.
pub const MAX_VALUE_BYTES: usize = 256 * 1024;
/// The most items a filter may put in an array.
pub const MAX_ITEMS: usize = 10_000;
/// The largest output of one rendered field.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// The tag counting loop passes.
pub const LOOP_TAG: &str = "crossline_loop";

thread_local! {
    /// Loop passes left in the field being rendered on this thread (rendering is synchronous).
    static LOOPS_LEFT: Cell<u32> = const { Cell::new(MAX_LOOPS) };
}

/// Runs `render` with a fresh loop budget.
pub fn with_loop_budget<T>(render: impl FnOnce() -> T) -> T {
    LOOPS_LEFT.with(|left| left.set(MAX_LOOPS));
    render()
}

/// `{% crossline_loop %}`: one pass of a loop.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoopTag;

impl TagReflection for LoopTag {
    fn tag(&self) -> &str {
        LOOP_TAG
    }

    fn description(&self) -> &str {
        "counts one pass of a loop against the template's budget (inserted by Crossline)"
    }
}

impl ParseTag for LoopTag {
    fn parse(&self, mut arguments: TagTokenIter<'_>, _options: &Language) -> Result<Box<dyn Renderable>> {
        arguments.expect_nothing()?;
        Ok(Box::new(LoopPass))
    }

    fn reflection(&self) -> &dyn TagReflection {
        self
    }
}

#[derive(Debug)]
struct LoopPass;

impl Renderable for LoopPass {
    fn render_to(&self, _writer: &mut dyn Write, _runtime: &dyn Runtime) -> Result<()> {
        LOOPS_LEFT.with(|left| match left.get().checked_sub(1) {
            Some(rest) => {
                left.set(rest);
                Ok(())
            }
            None => Err(Error::with_msg(format!("the template's loops run more than {MAX_LOOPS} times"))),
        })
    }
}

/// A writer that takes at most `limit` bytes; past it every write fails and `exceeded` is set.
pub struct CappedWriter {
    /// What was written.
    pub bytes: Vec<u8>,
    limit: usize,
    /// Whether a write went past the limit.
    pub exceeded: bool,
}

impl CappedWriter {
    /// An empty writer taking at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        CappedWriter { bytes: Vec::new(), limit, exceeded: false }
    }
}

impl Write for CappedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            self.exceeded = true;
            return Err(std::io::Error::other(format!("more than {} bytes", self.limit)));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `{% capture name %}…{% endcapture %}`, with the captured text bounded.
#[derive(Clone, Copy, Debug, Default)]
pub struct CaptureBlock;

impl BlockReflection for CaptureBlock {
    fn start_tag(&self) -> &str {
        "capture"
    }

    fn end_tag(&self) -> &str {
        "endcapture"
    }

    fn description(&self) -> &str {
        "renders its body into a variable (at most 256 KiB)"
    }
}

impl ParseBlock for CaptureBlock {
    fn parse(
        &self,
        mut arguments: TagTokenIter<'_>,
        mut block: TagBlock<'_, '_>,
        options: &Language,
    ) -> Result<Box<dyn Renderable>> {
        let name = KString::from_ref(
            arguments.expect_next("capture: a variable name is expected")?.expect_identifier().into_result()?,
        );
        arguments.expect_nothing()?;
        let body = Template::new(block.parse_all(options)?);
        block.assert_empty();
        Ok(Box::new(Capture { name, body }))
    }

    fn reflection(&self) -> &dyn BlockReflection {
        self
    }
}

#[derive(Debug)]
struct Capture {
    name: KString,
    body: Template,
}

impl Renderable for Capture {
    fn render_to(&self, _writer: &mut dyn Write, runtime: &dyn Runtime) -> Result<()> {
        let mut captured = CappedWriter::new(MAX_VALUE_BYTES);
        let rendered = self.body.render_to(&mut captured, runtime);
        if captured.exceeded {
            return Err(Error::with_msg(format!("capture {}: more than {} KiB", self.name, MAX_VALUE_BYTES / 1024)));
        }
        rendered?;
        let text = String::from_utf8(captured.bytes).map_err(|_| Error::with_msg("capture: not UTF-8"))?;
        runtime.set_global(self.name.clone(), Value::scalar(text));
        Ok(())
    }
}

/// Whether a filter's result is within bounds.
fn check(name: &str, value: Value) -> Result<Value> {
    let too_long = || Error::with_msg(format!("{name}: the result is longer than {} KiB", MAX_VALUE_BYTES / 1024));
    match &value {
        Value::Scalar(scalar) => {
            let len = scalar.to_kstr().len();
            if len > MAX_VALUE_BYTES {
                return Err(too_long());
            }
        }
        Value::Array(items) => {
            if items.len() > MAX_ITEMS {
                return Err(Error::with_msg(format!("{name}: the result has more than {MAX_ITEMS} items")));
            }
            let bytes: usize = items.iter().filter_map(|item| item.as_scalar().map(|s| s.to_kstr().len())).sum();
            if bytes > MAX_VALUE_BYTES {
                return Err(too_long());
            }
        }
        Value::Object(object) if object.len() > MAX_ITEMS => {
            return Err(Error::with_msg(format!("{name}: the result has more than {MAX_ITEMS} keys")));
        }
        _ => {}
    }
    Ok(value)
}

/// A standard filter whose every result is checked ([`check`]).
#[derive(Clone)]
pub struct Checked(pub Box<dyn ParseFilter>);

impl ParseFilter for Checked {
    fn parse(&self, arguments: FilterArguments<'_>) -> Result<Box<dyn Filter>> {
        let name = self.0.reflection().name().to_owned();
        Ok(Box::new(CheckedFilter { name, inner: self.0.parse(arguments)? }))
    }

    fn reflection(&self) -> &dyn FilterReflection {
        self.0.reflection()
    }
}

struct CheckedFilter {
    name: String,
    inner: Box<dyn Filter>,
}

impl fmt::Debug for CheckedFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

impl fmt::Display for CheckedFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl Filter for CheckedFilter {
    fn evaluate(&self, input: &dyn ValueView, runtime: &dyn Runtime) -> Result<Value> {
        check(&self.name, self.inner.evaluate(input, runtime)?)
    }
}

/// `replace` and `replace_first`: the result's size is known before it is made.
#[derive(Clone, Copy, Debug)]
pub struct ReplaceFilter {
    /// `replace_first`.
    pub first: bool,
}

impl FilterReflection for ReplaceFilter {
    fn name(&self) -> &str {
        if self.first { "replace_first" } else { "replace" }
    }

    fn description(&self) -> &str {
        "replaces every (or the first) occurrence of a string with another"
    }

    fn positional_parameters(&self) -> &'static [ParameterReflection] {
        &[]
    }

    fn keyword_parameters(&self) -> &'static [ParameterReflection] {
        &[]
    }
}

impl ParseFilter for ReplaceFilter {
    fn parse(&self, mut arguments: FilterArguments<'_>) -> Result<Box<dyn Filter>> {
        let name = self.name();
        let search = arguments
            .positional
            .next()
            .ok_or_else(|| Error::with_msg(format!("{name}: the string to replace is expected")))?;
        let with = arguments.positional.next();
        if arguments.positional.next().is_some() || arguments.keyword.next().is_some() {
            return Err(Error::with_msg(format!("{name}: takes two arguments")));
        }
        Ok(Box::new(Replace { first: self.first, search, with }))
    }

    fn reflection(&self) -> &dyn FilterReflection {
        self
    }
}

#[derive(Debug)]
struct Replace {
    first: bool,
    search: Expression,
    with: Option<Expression>,
}

impl fmt::Display for Replace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.first { "replace_first" } else { "replace" })
    }
}

impl Filter for Replace {
    fn evaluate(&self, input: &dyn ValueView, runtime: &dyn Runtime) -> Result<Value> {
        let text = input.to_kstr();
        let search = self.search.evaluate(runtime)?.to_kstr().into_owned();
        let with = match &self.with {
            Some(with) => with.evaluate(runtime)?.to_kstr().into_owned(),
            None => KString::default(),
        };
        let (text, search, with) = (text.as_str(), search.as_str(), with.as_str());
        // An empty search matches between every two characters, as `str::replace` does.
        let found = match (self.first, search.is_empty()) {
            (true, _) => usize::from(text.contains(search)),
            (false, true) => text.chars().count() + 1,
            (false, false) => text.matches(search).count(),
        };
        let len = (text.len() + found.saturating_mul(with.len())).saturating_sub(found * search.len());
        if len > MAX_VALUE_BYTES {
            return Err(Error::with_msg(format!(
                "{self}: the result would be longer than {} KiB",
                MAX_VALUE_BYTES / 1024
            )));
        }
        let replaced = if self.first { text.replacen(search, with, 1) } else { text.replace(search, with) };
        Ok(Value::scalar(replaced))
    }
}

/// `join`: the result's size is known before it is made.
#[derive(Clone, Copy, Debug, Default)]
pub struct JoinFilter;

impl FilterReflection for JoinFilter {
    fn name(&self) -> &str {
        "join"
    }

    fn description(&self) -> &str {
        "joins an array's items with a separator (a space when none is given)"
    }

    fn positional_parameters(&self) -> &'static [ParameterReflection] {
        &[]
    }

    fn keyword_parameters(&self) -> &'static [ParameterReflection] {
        &[]
    }
}

impl ParseFilter for JoinFilter {
    fn parse(&self, mut arguments: FilterArguments<'_>) -> Result<Box<dyn Filter>> {
        let separator = arguments.positional.next();
        if arguments.positional.next().is_some() || arguments.keyword.next().is_some() {
            return Err(Error::with_msg("join: takes one argument, the separator"));
        }
        Ok(Box::new(Join { separator }))
    }

    fn reflection(&self) -> &dyn FilterReflection {
        self
    }
}

#[derive(Debug)]
struct Join {
    separator: Option<Expression>,
}

impl fmt::Display for Join {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("join")
    }
}

impl Filter for Join {
    fn evaluate(&self, input: &dyn ValueView, runtime: &dyn Runtime) -> Result<Value> {
        let separator = match &self.separator {
            Some(separator) => separator.evaluate(runtime)?.to_kstr().into_owned(),
            None => KString::from_static(" "),
        };
        let Some(array) = input.as_array() else {
            return check("join", Value::scalar(input.to_kstr().into_owned()));
        };
        let items: Vec<_> = array.values().map(|item| item.to_kstr().into_owned()).collect();
        let len = items.iter().map(|item| item.as_str().len()).sum::<usize>()
            + items.len().saturating_sub(1).saturating_mul(separator.len());
        if len > MAX_VALUE_BYTES {
            return Err(Error::with_msg(format!(
                "join: the result would be longer than {} KiB",
                MAX_VALUE_BYTES / 1024
            )));
        }
        let mut joined = String::with_capacity(len);
        for (index, item) in items.iter().enumerate() {
            if index > 0 {
                joined.push_str(&separator);
            }
            joined.push_str(item);
        }
        Ok(Value::scalar(joined))
    }
}
