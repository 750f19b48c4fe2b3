//! Load-time checks of a compiled expression's names.
//!
//! The CEL crate resolves identifiers only when an expression runs, so a typo
//! such as `claim.sub` or `vars.namespcae` would compile and then deny every
//! token. This walk refuses them in `init` instead, with their position. It
//! only rejects what can never resolve: an identifier that is not `claims`,
//! `vars`, a macro's own variable or a type name, and a `vars.<name>` that no
//! earlier variable defines. Everything else (functions, field names of
//! `claims`) is left to evaluation, which denies on error.
//!
//! The walk also collects the literal patterns of `matches`, so that `init`
//! can compile them once and refuse an invalid one, and which top-level
//! claims the expression reads, so that an evaluation converts only those.

use cel::Program;
use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};
use std::collections::BTreeSet;

/// The variable holding the verified claims.
pub const CLAIMS: &str = "claims";
/// The variable holding the values of earlier `variables`.
pub const VARS: &str = "vars";

/// Identifiers that name CEL types, as in `type(claims.aud) == list`.
const TYPE_NAMES: &[&str] = &[
    "bool",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
];

/// Function namespaces the policy's environment registers (`strings.quote`,
/// `optional.of`): such an identifier is only valid as a call's target.
const NAMESPACES: &[&str] = &["strings", "optional"];

/// A name that can never resolve, and where it is.
#[derive(Debug)]
pub struct Problem {
    /// Offset in code points from the start of the expression, when known.
    pub offset: Option<u32>,
    pub message: String,
}

/// A pattern written as a string literal in a `matches` call.
#[derive(Debug)]
pub struct RegexLiteral {
    /// Offset in code points of the call, when known.
    pub offset: Option<u32>,
    pub pattern: String,
}

/// Which top-level claims an expression reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimUse {
    /// Only these, each named literally: `claims.sub`, `claims['kubernetes.io']`.
    Fields(BTreeSet<String>),
    /// Possibly any: `claims` is used as a whole (`claims.exists(...)`,
    /// `size(claims)`, `claims[vars.key]`, ...).
    All,
}

impl ClaimUse {
    /// What a set of expressions reads together.
    pub fn union<'a>(uses: impl IntoIterator<Item = &'a ClaimUse>) -> ClaimUse {
        let mut all = BTreeSet::new();
        for used in uses {
            match used {
                ClaimUse::Fields(fields) => all.extend(fields.iter().cloned()),
                ClaimUse::All => return ClaimUse::All,
            }
        }
        ClaimUse::Fields(all)
    }
}

/// What [`check_names`] learnt about an expression that passed.
#[derive(Debug)]
pub struct Names {
    /// The literal patterns it passes to `matches`.
    pub regexes: Vec<RegexLiteral>,
    /// The claims it reads.
    pub claims: ClaimUse,
    /// Whether it uses `vars` other than as `vars.<name>` (`vars['x']`,
    /// `has(vars.x)`, `size(vars)`): only then must `vars` be bound as a
    /// map; `vars.<name>` alone resolves as a qualified name.
    pub vars_whole: bool,
}

/// Checks the names `program` uses, `defined` being the variables an
/// expression at its place may refer to as `vars.<name>`.
pub fn check_names(program: &Program, defined: &[&str]) -> Result<Names, Problem> {
    let mut walker = Walker {
        program,
        defined,
        regexes: Vec::new(),
        claims: ClaimUse::Fields(BTreeSet::new()),
        vars_whole: false,
    };
    walker.walk(program.expression(), &mut Vec::new())?;
    Ok(Names {
        regexes: walker.regexes,
        claims: walker.claims,
        vars_whole: walker.vars_whole,
    })
}

struct Walker<'a> {
    program: &'a Program,
    defined: &'a [&'a str],
    regexes: Vec<RegexLiteral>,
    claims: ClaimUse,
    vars_whole: bool,
}

impl Walker<'_> {
    fn offset(&self, at: &IdedExpr) -> Option<u32> {
        self.program
            .source_info()
            .offset_for(at.id)
            .map(|(start, _)| start)
    }

    fn problem(&self, at: &IdedExpr, message: String) -> Problem {
        Problem {
            offset: self.offset(at),
            message,
        }
    }

    /// `bound` holds the variables macros introduce (`x` in `l.all(x, ...)`),
    /// innermost last: they shadow `claims` and `vars`.
    fn walk<'e>(&mut self, e: &'e IdedExpr, bound: &mut Vec<&'e str>) -> Result<(), Problem> {
        match &e.expr {
            Expr::Ident(name) => {
                // Reached only where `claims` or `vars` is not selected from
                // by a literal name (those are handled by their parent below).
                if self.is_free(e, CLAIMS, bound) {
                    self.claims = ClaimUse::All;
                }
                if self.is_free(e, VARS, bound) {
                    self.vars_whole = true;
                }
                let known = bound.contains(&name.as_str())
                    || name == CLAIMS
                    || name == VARS
                    || TYPE_NAMES.contains(&name.as_str())
                    // The parser's own accumulators, e.g. `@result`.
                    || name.starts_with('@');
                if known {
                    Ok(())
                } else {
                    Err(self.problem(
                        e,
                        format!(
                            "unknown identifier `{name}` (the claims are `{CLAIMS}`, \
                             earlier variables `{VARS}.<name>`)"
                        ),
                    ))
                }
            }
            Expr::Select(select) => {
                if self.is_free(&select.operand, VARS, bound) {
                    self.check_var(&select.operand, &select.field)?;
                    // `has(vars.x)` tests a field of the map itself.
                    if !select.test {
                        return Ok(());
                    }
                }
                if self.is_free(&select.operand, CLAIMS, bound) {
                    self.read_claim(&select.field);
                    return Ok(());
                }
                self.walk(&select.operand, bound)
            }
            Expr::Call(call) => {
                // `vars['name']` is the index operator applied to `vars`.
                if call.func_name == "_[_]"
                    && let [operand, key] = call.args.as_slice()
                    && let Expr::Literal(LiteralValue::String(name)) = &key.expr
                {
                    if self.is_free(operand, VARS, bound) {
                        self.check_var(operand, name.as_ref())?;
                    }
                    // `claims['kubernetes.io']`.
                    if self.is_free(operand, CLAIMS, bound) {
                        self.read_claim(name.as_ref());
                        return Ok(());
                    }
                }
                // `s.matches('re')` or `matches(s, 're')`.
                if call.func_name == "matches"
                    && let Some(pattern) = call.args.last()
                    && let Expr::Literal(LiteralValue::String(pattern)) = &pattern.expr
                {
                    let offset = self.offset(e);
                    self.regexes.push(RegexLiteral {
                        offset,
                        pattern: pattern.inner().to_owned(),
                    });
                }
                if let Some(target) = &call.target {
                    let is_namespace = matches!(&target.expr,
                        Expr::Ident(name) if NAMESPACES.contains(&name.as_str())
                            && !bound.contains(&name.as_str()));
                    if !is_namespace {
                        self.walk(target, bound)?;
                    }
                }
                call.args.iter().try_for_each(|arg| self.walk(arg, bound))
            }
            Expr::Comprehension(c) => {
                self.walk(&c.iter_range, bound)?;
                self.walk(&c.accu_init, bound)?;
                let depth = bound.len();
                bound.push(&c.iter_var);
                if let Some(second) = &c.iter_var2 {
                    bound.push(second);
                }
                bound.push(&c.accu_var);
                let result = [&c.loop_cond, &c.loop_step, &c.result]
                    .into_iter()
                    .try_for_each(|part| self.walk(part, bound));
                bound.truncate(depth);
                result
            }
            Expr::List(list) => list
                .elements
                .iter()
                .try_for_each(|item| self.walk(item, bound)),
            Expr::Map(map) => map
                .entries
                .iter()
                .try_for_each(|entry| self.walk_entry(&entry.expr, bound)),
            Expr::Struct(s) => s
                .entries
                .iter()
                .try_for_each(|entry| self.walk_entry(&entry.expr, bound)),
            Expr::Literal(_) | Expr::Unspecified => Ok(()),
        }
    }

    fn walk_entry<'e>(
        &mut self,
        entry: &'e EntryExpr,
        bound: &mut Vec<&'e str>,
    ) -> Result<(), Problem> {
        match entry {
            EntryExpr::StructField(field) => self.walk(&field.value, bound),
            EntryExpr::MapEntry(entry) => {
                self.walk(&entry.key, bound)?;
                self.walk(&entry.value, bound)
            }
        }
    }

    /// Whether `e` is the identifier `name`, not shadowed by a macro's
    /// variable.
    fn is_free(&self, e: &IdedExpr, name: &str, bound: &[&str]) -> bool {
        matches!(&e.expr, Expr::Ident(ident) if ident == name && !bound.contains(&name))
    }

    fn read_claim(&mut self, name: &str) {
        if let ClaimUse::Fields(fields) = &mut self.claims {
            fields.insert(name.to_owned());
        }
    }

    fn check_var(&self, at: &IdedExpr, name: &str) -> Result<(), Problem> {
        if self.defined.contains(&name) {
            return Ok(());
        }
        let defined = if self.defined.is_empty() {
            "no variable is defined before it".to_owned()
        } else {
            format!("defined before it: {}", self.defined.join(", "))
        };
        Err(self.problem(
            at,
            format!("`{VARS}.{name}` is not a variable defined before this expression ({defined})"),
        ))
    }
}
