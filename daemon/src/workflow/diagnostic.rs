//! Problems found in workflow files, each pinned to a file and a byte span and
//! rendered like a compiler error: `--> path:line:col`, the source line, a caret
//! and a `help:` line that says what to do.

use std::fmt;
use std::ops::Range;

use annotate_snippets::{Level, Renderer, Snippet};

/// One problem in one file.
#[derive(Debug, Clone)]
pub(crate) struct Diagnostic {
    /// Path as shown to the user (relative to where nudge was pointed).
    pub(crate) file: String,
    /// Byte range in the file's source; empty ranges point at a position.
    pub(crate) span: Range<usize>,
    pub(crate) message: String,
    pub(crate) help: Option<String>,
}

impl Diagnostic {
    pub(crate) fn new(file: &str, span: Range<usize>, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_string(),
            span,
            message: message.into(),
            help: None,
        }
    }

    pub(crate) fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// 1-based line and column (in characters) of the span's start.
    pub(crate) fn line_col(&self, source: &str) -> (usize, usize) {
        let start = self.span.start.min(source.len());
        let before = &source[..floor_char_boundary(source, start)];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    /// Renders with the source line and a caret, as `nudge check` prints it.
    pub(crate) fn render(&self, source: &str, color: bool) -> String {
        let (line, col) = self.line_col(source);
        let title = format!("{}:{}:{}: {}", self.file, line, col, self.message);
        // The renderer slices the source at the span: both ends must fall between characters.
        let start = floor_char_boundary(source, self.span.start);
        let mut span = start..ceil_char_boundary(source, self.span.end.max(start));
        if span.is_empty() && span.end < source.len() {
            span.end = ceil_char_boundary(source, span.end + 1);
        }
        let snippet = Snippet::source(source)
            .origin(&self.file)
            .line_start(1)
            .fold(true)
            .annotation(Level::Error.span(span).label(""));
        let mut message = Level::Error.title(&title).snippet(snippet);
        if let Some(help) = &self.help {
            message = message.footer(Level::Help.title(help));
        }
        let renderer = if color { Renderer::styled() } else { Renderer::plain() };
        renderer.render(message).to_string()
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// Every problem in a workflow set, with the sources needed to show them.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    pub(crate) items: Vec<Diagnostic>,
    pub(crate) sources: Vec<(String, String)>,
}

impl Diagnostics {
    pub(crate) fn render(&self, color: bool) -> String {
        let mut out = String::new();
        for d in &self.items {
            let source = self
                .sources
                .iter()
                .find(|(file, _)| *file == d.file)
                .map(|(_, s)| s.as_str())
                .unwrap_or("");
            out.push_str(&d.render(source, color));
            out.push_str("\n\n");
        }
        let n = self.items.len();
        out.push_str(&format!(
            "error: {n} problem{} in workflow files",
            if n == 1 { "" } else { "s" }
        ));
        out
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}

impl std::error::Error for Diagnostics {}

/// "did you mean `x`?" when one candidate is close to what was written.
pub(crate) fn did_you_mean<'a>(written: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(written, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("did you mean `{c}`?"))
}
