//! A located problem in a project.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// One problem in a project, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// File, relative to the project root.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column on that line, when known (SQL problems); u32 keeps the type small.
    pub column: Option<u32>,
    /// What it is about, e.g. "silver table `orders`, column `amount`".
    pub subject: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when obvious.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A problem in `file` about `subject`.
    pub fn new(file: impl Into<PathBuf>, subject: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line: None,
            column: None,
            subject: subject.into(),
            message: message.into(),
            hint: None,
        }
    }

    /// Sets the line.
    pub fn with_line(self, line: Option<usize>) -> Self {
        Self { line, ..self }
    }

    /// Sets the line and column.
    pub fn with_position(self, position: Option<(usize, Option<usize>)>) -> Self {
        Self {
            line: position.map(|p| p.0),
            column: position.and_then(|p| p.1).and_then(|c| u32::try_from(c).ok()),
            ..self
        }
    }

    /// Sets the hint.
    pub fn with_hint(self, hint: impl Into<String>) -> Self {
        Self { hint: Some(hint.into()), ..self }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if self.subject.is_empty() {
            write!(f, ": {}", self.message)?;
        } else {
            write!(f, ": {}: {}", self.subject, self.message)?;
        }
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}
