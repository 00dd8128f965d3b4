//! Counts the integer operations a WGSL nonce kernel spends per nonce, from naga's IR (each
//! IR `Binary`/`Unary` expression is one SPIR-V instruction: `OpIAdd`, `OpBitwiseXor`,
//! `OpShiftRightLogical`, ...), and models them as NVIDIA instructions.
//!
//! ```sh
//! cargo run --release -p hashgrid-node --example shader_ops [shaders/sha256d.wgsl ...]
//! ```
//!
//! Each shader is parsed and validated. The count walks each entry point with every function
//! call inlined (the kernels are unrolled: a static count is the per-nonce count) and puts
//! what sits under an `if` apart: the early exit's rare rounds and the hit report. An entry
//! point with one loop whose body has no loop is a version loop (`search_rolled`): what is
//! outside it runs once per nonce (the shared schedule), its body once per version, and the
//! count is given per nonce-version for k = 1, 2, 4, 8 and 16, i.e. (outside + k · body) / k.
//! A kernel with any other loop is reported as such (its static count is not per nonce).
//!
//! The NVIDIA model: a rotate spelled `(x >> n) | (x << 32 - n)` is one `SHF` (funnel shift),
//! other shifts one `SHF` each; runs of bitwise logic become `LOP3`s (any function of three
//! inputs is one; estimated as one per two 2-input operations); adds become `IADD3`s (one
//! per two adds); everything else (compares, selects) one instruction each.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use naga::{BinaryOperator, Block, Expression, Function, Handle, Literal, Module, Statement, UnaryOperator};

/// Operation counts of one path through a function.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Ops {
    add: u64,
    logic: u64,
    shift: u64,
    /// `(x >> n) | (x << 32 - n)` pairs: their two shifts and the `|` are not in the above.
    rotate: u64,
    other: u64,
    loops: u64,
}

impl Ops {
    fn plus(self, o: Ops, times: u64) -> Ops {
        Ops {
            add: self.add + o.add * times,
            logic: self.logic + o.logic * times,
            shift: self.shift + o.shift * times,
            rotate: self.rotate + o.rotate * times,
            other: self.other + o.other * times,
            loops: self.loops + o.loops * times,
        }
    }
    fn spirv(self) -> u64 {
        self.add + self.logic + self.shift + 3 * self.rotate + self.other
    }
    fn nvidia(self) -> u64 {
        self.add.div_ceil(2) + self.logic.div_ceil(2) + self.shift + self.rotate + self.other
    }
}

/// A function's counts: the common path outside loops, the common path of one loop iteration,
/// and what sits under an `if` (in or out of a loop).
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    main: Ops,
    each: Ops,
    rare: Ops,
}

/// Where the statements being walked run.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Path {
    Main,
    Each,
    Rare,
}

impl Tally {
    fn at(&mut self, path: Path) -> &mut Ops {
        match path {
            Path::Main => &mut self.main,
            Path::Each => &mut self.each,
            Path::Rare => &mut self.rare,
        }
    }

    /// One call of a function with counts `callee`, made on `path`.
    fn call(&mut self, callee: Tally, path: Path) {
        *self.at(path) = self.at(path).plus(callee.main, 1);
        let each = if path == Path::Rare { Path::Rare } else { Path::Each };
        *self.at(each) = self.at(each).plus(callee.each, 1);
        self.rare = self.rare.plus(callee.rare, 1);
    }

    fn loops(&self) -> u64 {
        self.main.loops + self.each.loops + self.rare.loops
    }
}

/// Counts per function, calls inlined.
struct Counter<'a> {
    module: &'a Module,
    done: HashMap<Handle<Function>, Tally>,
}

impl Counter<'_> {
    fn function(&mut self, f: &Function) -> Tally {
        let rotates = rotate_parts(f);
        let mut tally = Tally::default();
        self.block(f, &f.body, &rotates, Path::Main, &mut tally);
        tally
    }

    fn block(
        &mut self,
        f: &Function,
        block: &Block,
        rotates: &HashMap<Handle<Expression>, bool>,
        path: Path,
        tally: &mut Tally,
    ) {
        let rare = Path::Rare;
        for statement in block.iter() {
            match statement {
                Statement::Emit(range) => {
                    for h in range.clone() {
                        count_expression(f, h, rotates, tally.at(path));
                    }
                }
                Statement::Call { function, .. } => {
                    let callee = match self.done.get(function) {
                        Some(c) => *c,
                        None => {
                            let c = self.function(&self.module.functions[*function]);
                            self.done.insert(*function, c);
                            c
                        }
                    };
                    tally.call(callee, path);
                }
                Statement::Block(b) => self.block(f, b, rotates, path, tally),
                Statement::If { accept, reject, .. } => {
                    self.block(f, accept, rotates, rare, tally);
                    self.block(f, reject, rotates, rare, tally);
                }
                Statement::Loop { body, continuing, .. } => {
                    tally.at(path).loops += 1;
                    let inner = if path == Path::Rare { rare } else { Path::Each };
                    self.block(f, body, rotates, inner, tally);
                    self.block(f, continuing, rotates, inner, tally);
                }
                Statement::Switch { cases, .. } => {
                    for case in cases {
                        self.block(f, &case.body, rotates, rare, tally);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The expressions that are part of a rotate: the `|` (true) and its two shifts (false).
fn rotate_parts(f: &Function) -> HashMap<Handle<Expression>, bool> {
    let shift = |h: Handle<Expression>| match f.expressions[h] {
        Expression::Binary { op, left, right } => {
            let amount = match f.expressions[right] {
                Expression::Literal(Literal::U32(n)) => n,
                _ => return None,
            };
            match op {
                BinaryOperator::ShiftRight => Some((left, amount)),
                BinaryOperator::ShiftLeft => Some((left, 32u32.wrapping_sub(amount))),
                _ => None,
            }
        }
        _ => None,
    };
    let mut parts = HashMap::new();
    for (h, e) in f.expressions.iter() {
        if let Expression::Binary { op: BinaryOperator::InclusiveOr, left, right } = *e
            && let (Some((x, n)), Some((y, m))) = (shift(left), shift(right))
            && x == y
            && n == m
        {
            parts.insert(h, true);
            parts.insert(left, false);
            parts.insert(right, false);
        }
    }
    parts
}

fn count_expression(f: &Function, h: Handle<Expression>, rotates: &HashMap<Handle<Expression>, bool>, ops: &mut Ops) {
    match rotates.get(&h) {
        Some(true) => {
            ops.rotate += 1;
            return;
        }
        Some(false) => return,
        None => {}
    }
    match f.expressions[h] {
        Expression::Binary { op, .. } => match op {
            BinaryOperator::Add | BinaryOperator::Subtract => ops.add += 1,
            BinaryOperator::And | BinaryOperator::InclusiveOr | BinaryOperator::ExclusiveOr => ops.logic += 1,
            BinaryOperator::ShiftLeft | BinaryOperator::ShiftRight => ops.shift += 1,
            _ => ops.other += 1,
        },
        Expression::Unary { op: UnaryOperator::BitwiseNot, .. } => ops.logic += 1,
        Expression::Unary { .. } | Expression::Select { .. } | Expression::Math { .. } => ops.other += 1,
        _ => {}
    }
}

fn main() -> Result<()> {
    let mut paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shaders");
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {dir}"))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "wgsl") {
                paths.push(path.display().to_string());
            }
        }
        paths.sort();
    }
    println!(
        "| kernel | k | SPIR-V int ops per nonce-version | once per nonce | per version | adds | logic \
         | shifts | rotates | other | rare path ops | NVIDIA est. per nonce-version |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for path in paths {
        let source = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let module = naga::front::wgsl::parse_str(&source).map_err(|e| anyhow::anyhow!(e.emit_to_string(&source)))?;
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .with_context(|| format!("validating {path}"))?;
        if module.entry_points.is_empty() {
            bail!("{path}: no entry point");
        }
        let name = path.rsplit('/').next().unwrap_or(&path);
        for entry in &module.entry_points {
            let mut counter = Counter { module: &module, done: HashMap::new() };
            let tally = counter.function(&entry.function);
            let kernel = format!("{name} `{}`", entry.name);
            let versions: &[u64] = match tally.loops() {
                0 => &[1],
                1 if tally.each != Ops::default() => &[1, 2, 4, 8, 16],
                _ => {
                    println!("| {kernel} | - | (has loops: not per nonce) | - | - | - | - | - | - | - | - | - |");
                    continue;
                }
            };
            for &k in versions {
                let per = |x: u64, y: u64| format!("{:.1}", (x + k * y) as f64 / k as f64);
                let (m, e) = (tally.main, tally.each);
                println!(
                    "| {kernel} | {k} | **{}** | {} | {} | {} | {} | {} | {} | {} | {} | **{}** |",
                    per(m.spirv(), e.spirv()),
                    m.spirv(),
                    e.spirv(),
                    per(m.add, e.add),
                    per(m.logic, e.logic),
                    per(m.shift, e.shift),
                    per(m.rotate, e.rotate),
                    per(m.other, e.other),
                    tally.rare.spirv(),
                    per(m.nvidia(), e.nvidia()),
                );
            }
        }
    }
    Ok(())
}
