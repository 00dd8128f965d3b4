//! Counts the integer operations a WGSL nonce kernel spends per nonce, from naga's IR (each
//! IR `Binary`/`Unary` expression is one SPIR-V instruction: `OpIAdd`, `OpBitwiseXor`,
//! `OpShiftRightLogical`, ...), and models them as NVIDIA instructions.
//!
//! ```sh
//! cargo run --release -p hashgrid-node --example shader_ops [shaders/sha256d.wgsl ...]
//! ```
//!
//! Each shader is parsed and validated. The count walks the entry point with every function
//! call inlined (the kernels are unrolled: a static count is the per-nonce count) and puts
//! what sits under an `if` apart: the early exit's rare rounds and the hit report. A kernel
//! with a loop is reported as such (its static count is not per nonce).
//!
//! The NVIDIA model: a rotate spelled `(x >> n) | (x << 32 - n)` is one `SHF` (funnel shift),
//! other shifts one `SHF` each; runs of bitwise logic become `LOP3`s (any function of three
//! inputs is one; estimated as one per two 2-input operations); adds become `IADD3`s (one
//! per two adds); everything else (compares, selects) one instruction each.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use naga::{BinaryOperator, Block, Expression, Function, Handle, Literal, Module, Statement, UnaryOperator};

/// Operation counts of one path through a function.
#[derive(Debug, Default, Clone, Copy)]
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

/// Counts per function (the main path, and what sits under an `if`), calls inlined.
struct Counter<'a> {
    module: &'a Module,
    done: HashMap<Handle<Function>, (Ops, Ops)>,
}

impl Counter<'_> {
    fn function(&mut self, f: &Function) -> (Ops, Ops) {
        let rotates = rotate_parts(f);
        let mut main = Ops::default();
        let mut rare = Ops::default();
        self.block(f, &f.body, &rotates, false, &mut main, &mut rare);
        (main, rare)
    }

    fn block(
        &mut self,
        f: &Function,
        block: &Block,
        rotates: &HashMap<Handle<Expression>, bool>,
        under_if: bool,
        main: &mut Ops,
        rare: &mut Ops,
    ) {
        for statement in block.iter() {
            let into = if under_if { &mut *rare } else { &mut *main };
            match statement {
                Statement::Emit(range) => {
                    for h in range.clone() {
                        count_expression(f, h, rotates, into);
                    }
                }
                Statement::Call { function, .. } => {
                    let (m, r) = match self.done.get(function) {
                        Some(c) => *c,
                        None => {
                            let c = self.function(&self.module.functions[*function]);
                            self.done.insert(*function, c);
                            c
                        }
                    };
                    *into = into.plus(m, 1);
                    *rare = rare.plus(r, 1);
                }
                Statement::Block(b) => self.block(f, b, rotates, under_if, main, rare),
                Statement::If { accept, reject, .. } => {
                    self.block(f, accept, rotates, true, main, rare);
                    self.block(f, reject, rotates, true, main, rare);
                }
                Statement::Loop { body, continuing, .. } => {
                    into.loops += 1;
                    self.block(f, body, rotates, under_if, main, rare);
                    self.block(f, continuing, rotates, under_if, main, rare);
                }
                Statement::Switch { cases, .. } => {
                    for case in cases {
                        self.block(f, &case.body, rotates, true, main, rare);
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
        "| shader | SPIR-V int ops/nonce | adds | logic | shifts | rotates | other | rare path ops | NVIDIA est. |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for path in paths {
        let source = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let module = naga::front::wgsl::parse_str(&source).map_err(|e| anyhow::anyhow!(e.emit_to_string(&source)))?;
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .with_context(|| format!("validating {path}"))?;
        let Some(entry) = module.entry_points.first() else { bail!("{path}: no entry point") };
        let mut counter = Counter { module: &module, done: HashMap::new() };
        let (main, rare) = counter.function(&entry.function);
        let name = path.rsplit('/').next().unwrap_or(&path);
        if main.loops > 0 {
            println!("| {name} | (has loops: not per nonce) | - | - | - | - | - | - | - |");
            continue;
        }
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
            main.spirv(),
            main.add,
            main.logic,
            main.shift,
            main.rotate,
            main.other,
            rare.spirv(),
            main.nvidia()
        );
    }
    Ok(())
}
