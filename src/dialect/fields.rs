//! JSON field readers that name the offending field, and the field problems each dialect
//! words its own way.

use super::Problem;
use serde_json::{Map, Value};

/// What kind of problem a field has; each dialect words it its own way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldKind {
    /// Absent (or null where null is not allowed).
    Missing,
    /// Present with the wrong JSON type; names the expected one.
    Type(&'static str),
    /// Shorter than the minimum (characters).
    TooShort(usize),
    /// Longer than the maximum (characters).
    TooLong(usize),
    /// Not in the expected format (uuid, url, ...); names it.
    Format(&'static str),
    /// Well-formed but not acceptable (explained in the message).
    Invalid(String),
}

/// A field problem: where (`["deviceInfo", "kind"]`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// Path of the field inside the body (or the query parameter's name).
    pub loc: Vec<String>,
    /// Whether the field is a query parameter rather than a body member.
    pub in_query: bool,
    /// What is wrong.
    pub kind: FieldKind,
}

impl FieldProblem {
    /// The dotted field name, e.g. `deviceInfo.kind`.
    pub fn field(&self) -> String {
        self.loc.join(".")
    }

    /// A plain-English description naming the field.
    pub fn describe(&self) -> String {
        let f = self.field();
        match &self.kind {
            FieldKind::Missing => format!("{f} is required"),
            FieldKind::Type(t) => format!("{f} must be {t}"),
            FieldKind::TooShort(1) => format!("{f} must not be empty"),
            FieldKind::TooShort(n) => format!("{f} must be at least {n} characters long"),
            FieldKind::TooLong(n) => format!("{f} must be at most {n} characters long"),
            FieldKind::Format(what) => format!("{f} must be a valid {what}"),
            FieldKind::Invalid(why) => format!("{f} {why}"),
        }
    }
}

/// A body problem for `loc`.
pub fn field(loc: &[&str], kind: FieldKind) -> Problem {
    Problem::Field(FieldProblem {
        loc: loc.iter().map(|s| s.to_string()).collect(),
        in_query: false,
        kind,
    })
}

/// A query-parameter problem.
pub fn query_field(name: &str, kind: FieldKind) -> Problem {
    Problem::Field(FieldProblem {
        loc: vec![name.to_string()],
        in_query: true,
        kind,
    })
}

/// Reads the members of one JSON object, naming fields by their path on failure.
#[derive(Debug)]
pub struct Fields<'a> {
    obj: &'a Map<String, Value>,
    prefix: Vec<&'a str>,
}

/// Length bounds of a string field, in characters.
#[derive(Debug, Clone, Copy)]
pub struct Len {
    /// Minimum.
    pub min: usize,
    /// Maximum.
    pub max: usize,
}

impl<'a> Fields<'a> {
    /// The top-level object.
    pub fn new(obj: &'a Map<String, Value>) -> Self {
        Fields {
            obj,
            prefix: Vec::new(),
        }
    }

    fn problem(&self, name: &'a str, kind: FieldKind) -> Problem {
        let mut loc = self.prefix.clone();
        loc.push(name);
        field(&loc, kind)
    }

    fn check_len(&self, name: &'a str, s: &str, len: Len) -> Result<(), Problem> {
        let n = s.chars().count();
        if n < len.min {
            return Err(if n == 0 {
                self.problem(name, FieldKind::TooShort(len.min.max(1)))
            } else {
                self.problem(name, FieldKind::TooShort(len.min))
            });
        }
        if n > len.max {
            return Err(self.problem(name, FieldKind::TooLong(len.max)));
        }
        Ok(())
    }

    /// A required string (null counts as missing).
    pub fn string(&self, name: &'a str, len: Len) -> Result<String, Problem> {
        self.opt_string(name, len)?
            .ok_or_else(|| self.problem(name, FieldKind::Missing))
    }

    /// An optional string: absent or null is `None`.
    pub fn opt_string(&self, name: &'a str, len: Len) -> Result<Option<String>, Problem> {
        match self.obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                self.check_len(name, s, len)?;
                Ok(Some(s.clone()))
            }
            Some(_) => Err(self.problem(name, FieldKind::Type("a string"))),
        }
    }

    /// An optional nested object, read with the same field naming.
    pub fn opt_object(&self, name: &'a str) -> Result<Option<Fields<'a>>, Problem> {
        match self.obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => {
                let mut prefix = self.prefix.clone();
                prefix.push(name);
                Ok(Some(Fields { obj: m, prefix }))
            }
            Some(_) => Err(self.problem(name, FieldKind::Type("an object"))),
        }
    }

    /// Whether the member is present and not null.
    pub fn has(&self, name: &str) -> bool {
        !matches!(self.obj.get(name), None | Some(Value::Null))
    }

    /// A field problem for a member of this object (for checks beyond type and length).
    pub fn invalid(&self, name: &'a str, kind: FieldKind) -> Problem {
        self.problem(name, kind)
    }
}
