//! The GPU search backend: SHA-256d nonce search in a WGSL compute shader through wgpu.
//!
//! This module owns adapter discovery and selection (`list_adapters`, `GpuBackend::open`), the
//! long-lived per-adapter context (device, queue, pipelines, and a fixed set of dispatch slots
//! whose buffers are created once and refilled with `Queue::write_buffer`), and the dispatch
//! loop; `job` owns the job uniform and the host-side mining precomputations in it.
//!
//! Each shader invocation tests one nonce. A search is cut into batches; two are in flight at
//! a time (one slot computes while the other's results are read back), and the batch size is
//! tuned from measured dispatch times toward `TARGET_DISPATCH_TIME`. Told the caller's next
//! search (`Backend::search_ahead`), the backend queues that search's first batch before it
//! returns, so the device works on while the host reports a slice and asks for the next; a
//! next search that differs from what was announced waits that batch out and discards it.
//! Hits, as (nonce, version index), go to a bounded result buffer through an atomic counter
//! that keeps counting past the capacity: when a batch overflows, its nonces are searched again
//! in smaller pieces (which may split again), so no hit is dropped. Every candidate is re-hashed
//! on the CPU (`verify_hit`) before it is reported. Failures come back as `SearchError::Gpu`;
//! nothing here panics on a device error.
//!
//! A version-rolled job (k = 2^bits versions) runs the `search_rolled` entry point
//! (`shares_schedule`): each invocation computes its nonce's first-hash message schedule once
//! and both compressions once per version, from the k midstates in the uniform. Its batches
//! are queued ahead like any others, and sized in hashes (nonces × versions), so a rolled
//! dispatch takes as long as a single-version one. With `GpuOptions::share_schedule` off, or
//! the reference shader, a rolled job is searched one version after another
//! (`search_each_version`), each announcing the next. What the sharing is worth:
//! BENCHMARKS.md, "GPU: the message schedule shared across versions".
//!
//! What the kernel steps are worth on Mesa lavapipe (llvmpipe, LLVM 15, 256-bit, release build,
//! 2-vCPU VM shared with other builds; median of 5 runs of 3 s, MH per CPU-second, ±25% run to
//! run), with the static count of ALU operations per nonce on the common path:
//!
//! | kernel                                              | MH/CPU-s | ALU ops/nonce |
//! |-----------------------------------------------------|---------:|--------------:|
//! | `sha256d_reference.wgsl` (loops, arrays)            |      0.8 |             – |
//! | unrolled, no precomputation, padding opaque         |      7.3 |          6753 |
//! | + rounds 0-3 on the host                            |      5.8 |          6611 |
//! | + first-block padding, schedule terms on the host   |      6.2 |          6375 |
//! | + second-hash padding folded                        |      6.7 |          6250 |
//! | + early exit on H7 (`sha256d.wgsl`)                 |      7.4 |          6002 |
//!
//! On lavapipe unrolling is the only step that shows (about 9×: the reference keeps its arrays
//! in memory); the precomputations remove 11% of the operations, less than the noise. They are
//! the standard ones for hardware GPUs, where ALU work is what limits the rate. End to end,
//! `hashgrid-node bench --backend gpu` measured 6.2-7.1 MH/s on that lavapipe.

use std::cell::OnceCell;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Backend, BackendKind, Hit, NONCE_SPACE, SearchError, SearchJob, SearchReport, verify_hit};

mod job;

pub use job::MAX_VERSIONS;
use job::{JobUniform, UNIFORM_SIZE};

/// The optimized search shader (host precomputations, folded padding, early exit), with the
/// single-version entry point `search` and the version-rolled one `search_rolled`.
const OPTIMIZED_SHADER: &str = include_str!("../../../../shaders/sha256d.wgsl");
/// The straightforward search shader, kept for differential tests and measurements.
const REFERENCE_SHADER: &str = include_str!("../../../../shaders/sha256d_reference.wgsl");
/// The entry point of `OPTIMIZED_SHADER` that shares the first hash's schedule across versions.
const ROLLED_ENTRY_POINT: &str = "search_rolled";

/// Invocations per workgroup (each tests one nonce); passed to the shaders' `WORKGROUP_SIZE`.
pub const WORKGROUP_SIZE: u32 = 256;
/// Hits one dispatch can hold before the batch must be searched again in pieces.
pub const DEFAULT_RESULT_CAPACITY: u32 = 1024;
/// The dispatch time the batch size is tuned toward.
pub const TARGET_DISPATCH_TIME: Duration = Duration::from_millis(80);
/// Dispatch slots, i.e. batches in flight at once.
const SLOTS: usize = 2;
/// The batch size a new backend starts from.
const FIRST_BATCH: u64 = 1 << 16;
const MIN_BATCH: u64 = WORKGROUP_SIZE as u64;
/// 2^30 nonces: 4,194,304 workgroups, dispatched as 65,535 × 65.
const MAX_BATCH: u64 = 1 << 30;
/// The WebGPU limit on workgroups per dispatch dimension.
const MAX_GROUPS_PER_DIMENSION: u32 = 65_535;
/// How long to wait for one dispatch before declaring the device hung.
const DISPATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Which WGSL search kernel a backend runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShaderVariant {
    /// `shaders/sha256d.wgsl`: the mining kernel.
    #[default]
    Optimized,
    /// `shaders/sha256d_reference.wgsl`: plain SHA-256d from the midstate.
    Reference,
}

impl ShaderVariant {
    fn source(self) -> &'static str {
        match self {
            ShaderVariant::Optimized => OPTIMIZED_SHADER,
            ShaderVariant::Reference => REFERENCE_SHADER,
        }
    }
}

/// How a `GpuBackend` is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuOptions {
    pub shader: ShaderVariant,
    /// Hits one dispatch can return (at least 1); more trigger a re-search in smaller pieces.
    pub result_capacity: u32,
    /// Whether a version-rolled range runs `search_rolled` (the first hash's schedule computed
    /// once per nonce for all k versions; on by default) rather than one version after
    /// another. Only with the optimized shader, and only for k <= `result_capacity` (a single
    /// nonce's hits must fit). What it is worth: BENCHMARKS.md, "GPU: the message schedule
    /// shared across versions".
    pub share_schedule: bool,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions { shader: ShaderVariant::Optimized, result_capacity: DEFAULT_RESULT_CAPACITY, share_schedule: true }
    }
}

/// A GPU adapter as `hashgrid-node devices` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct AdapterInfo {
    /// Position in `list_adapters()`; `--adapter` accepts it.
    pub index: usize,
    pub name: String,
    /// The graphics API: vulkan, metal, dx12, gl.
    pub backend: String,
    /// discrete, integrated, virtual, cpu or other.
    pub device_type: String,
    /// A software rasterizer running on the CPU (Mesa llvmpipe/lavapipe, WARP, SwiftShader).
    pub software: bool,
}

impl AdapterInfo {
    fn new(index: usize, info: &wgpu::AdapterInfo) -> Self {
        let device_type = match info.device_type {
            wgpu::DeviceType::DiscreteGpu => "discrete",
            wgpu::DeviceType::IntegratedGpu => "integrated",
            wgpu::DeviceType::VirtualGpu => "virtual",
            wgpu::DeviceType::Cpu => "cpu",
            wgpu::DeviceType::Other => "other",
        };
        AdapterInfo {
            index,
            name: info.name.clone(),
            backend: info.backend.to_str().to_owned(),
            device_type: device_type.to_owned(),
            software: info.device_type == wgpu::DeviceType::Cpu,
        }
    }

    fn is_hardware(&self) -> bool {
        matches!(self.device_type.as_str(), "discrete" | "integrated" | "virtual")
    }
}

/// The wgpu instance searches use: Vulkan, Metal and DX12 (`WGPU_BACKEND` overrides).
fn new_instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::PRIMARY;
    wgpu::Instance::new(desc.with_env())
}

fn enumerate(instance: &wgpu::Instance) -> Vec<(wgpu::Adapter, AdapterInfo)> {
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
        .into_iter()
        .enumerate()
        .map(|(index, adapter)| {
            let info = AdapterInfo::new(index, &adapter.get_info());
            (adapter, info)
        })
        .collect()
}

/// Every adapter wgpu can see, in the order `--adapter INDEX` refers to.
pub fn list_adapters() -> Vec<AdapterInfo> {
    enumerate(&new_instance()).into_iter().map(|(_, info)| info).collect()
}

/// Picks the adapter `wanted` names (index or case-insensitive name substring), or by default
/// the first hardware GPU, else (when `allow_software`) the first software adapter.
fn select(
    adapters: Vec<(wgpu::Adapter, AdapterInfo)>,
    wanted: Option<&str>,
    allow_software: bool,
) -> Result<(wgpu::Adapter, AdapterInfo), SearchError> {
    let software_refused = |name: &str| {
        SearchError::NoAdapter(format!(
            ": {name:?} is a software adapter (run on the CPU); pass --backend gpu to use it anyway"
        ))
    };
    match wanted.map(str::trim) {
        Some(wanted) => {
            let needle = wanted.to_lowercase();
            // An index if there is an adapter with it, else part of a name ("--adapter 3090").
            let index = wanted.parse::<usize>().ok().filter(|&index| index < adapters.len());
            let matches: Vec<_> = adapters
                .into_iter()
                .filter(|(_, info)| match index {
                    Some(index) => info.index == index,
                    None => info.name.to_lowercase().contains(&needle),
                })
                .collect();
            if matches.is_empty() {
                return Err(SearchError::UnknownAdapter(wanted.to_owned()));
            }
            let first_name = matches[0].1.name.clone();
            matches
                .into_iter()
                .find(|(_, info)| allow_software || !info.software)
                .ok_or_else(|| software_refused(&first_name))
        }
        None => {
            let mut software = None;
            for (adapter, info) in adapters {
                if info.is_hardware() {
                    return Ok((adapter, info));
                }
                if info.software && software.is_none() {
                    software = Some((adapter, info));
                }
            }
            match software {
                Some(found) if allow_software => Ok(found),
                Some((_, info)) => Err(software_refused(&info.name)),
                None => Err(SearchError::NoAdapter(
                    " (no Vulkan, Metal or DX12 adapter; install a GPU driver, or Mesa's \
                     lavapipe for a software one)"
                        .to_owned(),
                )),
            }
        }
    }
}

fn gpu_error(context: &str, error: impl fmt::Display) -> SearchError {
    SearchError::Gpu(format!("{context}: {error}"))
}

/// One dispatch's buffers: created once, reused for every batch.
#[derive(Debug)]
struct Slot {
    uniform: wgpu::Buffer,
    /// `[hit count, (nonce, version index)...]`, written by the shader.
    results: wgpu::Buffer,
    /// Where `results` is copied for the host to map.
    readback: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
    mapped_tx: mpsc::Sender<Result<(), wgpu::BufferAsyncError>>,
    mapped_rx: mpsc::Receiver<Result<(), wgpu::BufferAsyncError>>,
}

/// A batch submitted and not yet read back.
#[derive(Debug)]
struct Batch {
    slot: usize,
    /// Nonces `offset..offset + count` of the job.
    offset: u64,
    count: u64,
    submitted: Instant,
    submission: wgpu::SubmissionIndex,
    /// Whether its timing may steer the batch size (a full-size batch, not a remainder or piece).
    tunable: bool,
}

/// What one dispatch found.
#[derive(Debug)]
struct BatchResult {
    /// Hits the shader counted, possibly more than it could store.
    total: u64,
    /// (nonce, index into `SearchJob::versions`) of the hits stored.
    hits: Vec<(u32, u32)>,
}

/// The compute pipeline of `entry_point` in the WGSL `source`, with the shared bind group
/// layout. Errors surface in the caller's error scope.
fn build_pipeline(
    device: &wgpu::Device,
    layout: &wgpu::PipelineLayout,
    source: &str,
    entry_point: &str,
) -> wgpu::ComputePipeline {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("sha256d search"),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(entry_point),
        layout: Some(layout),
        module: &module,
        entry_point: Some(entry_point),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &[("WORKGROUP_SIZE", f64::from(WORKGROUP_SIZE))],
            zero_initialize_workgroup_memory: false,
        },
        cache: None,
    })
}

/// The device, pipelines and slots of one adapter.
#[derive(Debug)]
struct Context {
    device: wgpu::Device,
    queue: wgpu::Queue,
    /// `search` of the configured shader: one version per nonce.
    pipeline: wgpu::ComputePipeline,
    /// `search_rolled`, built on the first version-rolled dispatch.
    rolled: OnceCell<wgpu::ComputePipeline>,
    layout: wgpu::PipelineLayout,
    slots: Vec<Slot>,
    capacity: u32,
    results_size: u64,
    /// Errors wgpu reported outside any error scope, and device loss.
    errors: Arc<Mutex<Vec<String>>>,
}

impl Context {
    fn new(adapter: &wgpu::Adapter, options: &GpuOptions) -> Result<Self, SearchError> {
        let capacity = options.result_capacity.max(1);
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("hashgrid search"),
            required_limits: wgpu::Limits::downlevel_defaults(),
            ..Default::default()
        }))
        .map_err(|e| gpu_error("requesting the device", e))?;

        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&errors);
        device.on_uncaptured_error(Arc::new(move |error: wgpu::Error| {
            if let Ok(mut errors) = sink.lock() {
                errors.push(error.to_string());
            }
        }));
        let sink = Arc::clone(&errors);
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut errors) = sink.lock() {
                errors.push(format!("device lost ({reason:?}): {message}"));
            }
        });

        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("sha256d search"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: wgpu::BufferSize::new(UNIFORM_SIZE),
                    },
                    count: None,
                },
                wgpu::BindGroupLayoutEntry {
                    binding: 1,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only: false },
                        has_dynamic_offset: false,
                        min_binding_size: wgpu::BufferSize::new(8),
                    },
                    count: None,
                },
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("sha256d search"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = build_pipeline(&device, &pipeline_layout, options.shader.source(), "search");

        let results_size = 4 * (1 + 2 * u64::from(capacity));
        let slots = (0..SLOTS)
            .map(|i| {
                let buffer = |what: &str, size: u64, usage: wgpu::BufferUsages| {
                    device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some(&format!("sha256d search {what} {i}")),
                        size,
                        usage,
                        mapped_at_creation: false,
                    })
                };
                let uniform = buffer("job", UNIFORM_SIZE, wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST);
                let results = buffer(
                    "results",
                    results_size,
                    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                );
                let readback =
                    buffer("readback", results_size, wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
                let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("sha256d search"),
                    layout: &layout,
                    entries: &[
                        wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() },
                        wgpu::BindGroupEntry { binding: 1, resource: results.as_entire_binding() },
                    ],
                });
                let (mapped_tx, mapped_rx) = mpsc::channel();
                Slot { uniform, results, readback, bind_group, mapped_tx, mapped_rx }
            })
            .collect();
        if let Some(error) = pollster::block_on(scope.pop()) {
            return Err(gpu_error("building the search pipeline", error));
        }
        let context = Context {
            device,
            queue,
            pipeline,
            rolled: OnceCell::new(),
            layout: pipeline_layout,
            slots,
            capacity,
            results_size,
            errors,
        };
        context.check_errors()?;
        Ok(context)
    }

    /// The pipeline a dispatch of `uniform` runs: `search_rolled` for more than one version
    /// (built here the first time), else `search`.
    fn pipeline_for(&self, uniform: &JobUniform) -> Result<&wgpu::ComputePipeline, SearchError> {
        if uniform.versions() <= 1 {
            return Ok(&self.pipeline);
        }
        if let Some(pipeline) = self.rolled.get() {
            return Ok(pipeline);
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = build_pipeline(&self.device, &self.layout, OPTIMIZED_SHADER, ROLLED_ENTRY_POINT);
        if let Some(error) = pollster::block_on(scope.pop()) {
            return Err(gpu_error("building the version-rolled search pipeline", error));
        }
        self.check_errors()?;
        Ok(self.rolled.get_or_init(|| pipeline))
    }

    /// Fails with the first error wgpu reported asynchronously, if any.
    fn check_errors(&self) -> Result<(), SearchError> {
        let errors = self.errors.lock().map_err(|_| SearchError::Gpu("error log poisoned".to_owned()))?;
        match errors.first() {
            Some(error) => Err(SearchError::Gpu(error.clone())),
            None => Ok(()),
        }
    }

    /// Queues a dispatch over nonces `first_nonce..first_nonce + count` in `slot`, with the
    /// copy of its results to the slot's readback buffer and the buffer's mapping.
    fn submit(&self, slot: usize, uniform: &JobUniform) -> Result<wgpu::SubmissionIndex, SearchError> {
        let pipeline = self.pipeline_for(uniform)?;
        let slot = &self.slots[slot];
        self.queue.write_buffer(&slot.uniform, 0, bytemuck::bytes_of(uniform));
        let groups = uniform.count.div_ceil(WORKGROUP_SIZE);
        let x = groups.clamp(1, MAX_GROUPS_PER_DIMENSION);
        let y = groups.div_ceil(x).max(1);
        let mut encoder =
            self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("sha256d search") });
        encoder.clear_buffer(&slot.results, 0, Some(4));
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("sha256d search"),
                timestamp_writes: None,
            });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &slot.bind_group, &[]);
            pass.dispatch_workgroups(x, y, 1);
        }
        encoder.copy_buffer_to_buffer(&slot.results, 0, &slot.readback, 0, self.results_size);
        let submission = self.queue.submit([encoder.finish()]);
        let mapped = slot.mapped_tx.clone();
        slot.readback.map_async(wgpu::MapMode::Read, .., move |result| {
            // The receiver lives as long as the slot; a send can only fail during teardown.
            let _ = mapped.send(result);
        });
        Ok(submission)
    }

    /// Waits for `batch` and reads its hits.
    fn collect(&self, batch: &Batch) -> Result<BatchResult, SearchError> {
        let slot = &self.slots[batch.slot];
        let mut mapped = slot.mapped_rx.try_recv().map_err(|e| e.to_string());
        let deadline = Instant::now() + DISPATCH_TIMEOUT;
        while mapped.is_err() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SearchError::Gpu(format!(
                    "dispatch of {} nonces did not finish within {DISPATCH_TIMEOUT:?}",
                    batch.count
                )));
            }
            self.device
                .poll(wgpu::PollType::Wait { submission_index: Some(batch.submission.clone()), timeout: Some(left) })
                .map_err(|e| gpu_error("waiting for a dispatch", e))?;
            self.check_errors()?;
            mapped = slot.mapped_rx.recv_timeout(Duration::from_millis(1)).map_err(|e| e.to_string());
        }
        match mapped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(gpu_error("mapping the results", e)),
            Err(e) => return Err(gpu_error("mapping the results", e)),
        }
        let words: Vec<u32> = {
            let view = slot.readback.get_mapped_range(..).map_err(|e| gpu_error("reading the results", e))?;
            view.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        };
        slot.readback.unmap();
        let total = u64::from(words.first().copied().unwrap_or(0));
        let stored = total.min(u64::from(self.capacity)) as usize;
        let hits = words.get(1..1 + 2 * stored).unwrap_or_default();
        let hits = hits.chunks_exact(2).map(|pair| (pair[0], pair[1])).collect();
        Ok(BatchResult { total, hits })
    }

    /// Waits out batches abandoned by a failed search so their slots can be mapped again.
    fn drain(&self, in_flight: VecDeque<Batch>) {
        for batch in in_flight {
            if self.collect(&batch).is_err() {
                return;
            }
        }
    }
}

/// A search backend on one GPU adapter (hardware, or a software one when allowed).
#[derive(Debug)]
pub struct GpuBackend {
    info: AdapterInfo,
    context: Context,
    /// The current batch size in hashes (nonces times versions), steered toward
    /// `TARGET_DISPATCH_TIME`; kept across searches.
    batch: u64,
    /// The first batch of the search announced as next, queued while the last one finished.
    ahead: Option<Ahead>,
    /// `GpuOptions::share_schedule` for this adapter, with the optimized shader.
    share_schedule: bool,
}

/// A batch queued for an announced search: its nonces are `job.start..job.start + batch.count`.
#[derive(Debug)]
struct Ahead {
    job: SearchJob,
    batch: Batch,
}

impl Ahead {
    /// Whether this batch is the beginning of `job`'s range (same header, versions, target
    /// and start).
    fn begins(&self, job: &SearchJob) -> bool {
        self.job.header == job.header
            && self.job.rolled == job.rolled
            && self.job.target == job.target
            && self.job.start == job.start
            && self.batch.count <= job.count
    }
}

impl GpuBackend {
    /// Opens the adapter `adapter` names (an index into `list_adapters()` or a case-insensitive
    /// part of its name), or by default the first hardware GPU; a software adapter is used only
    /// when `allow_software`.
    pub fn open(adapter: Option<&str>, allow_software: bool) -> Result<Self, SearchError> {
        Self::open_with(adapter, allow_software, GpuOptions::default())
    }

    /// `open` with a choice of shader and result capacity.
    pub fn open_with(adapter: Option<&str>, allow_software: bool, options: GpuOptions) -> Result<Self, SearchError> {
        let instance = new_instance();
        let (adapter, info) = select(enumerate(&instance), adapter, allow_software)?;
        let context = Context::new(&adapter, &options)?;
        let share_schedule = options.shader == ShaderVariant::Optimized && options.share_schedule;
        Ok(GpuBackend { info, context, batch: FIRST_BATCH, ahead: None, share_schedule })
    }

    /// Whether `job` runs the `search_rolled` kernel, its versions tested per nonce with the
    /// first hash's schedule shared; otherwise a rolled job is searched one version after
    /// another. A job of one version (k = 1) always runs the single-version kernel, and so does
    /// one whose k hits of a single nonce would not fit the result buffer.
    pub fn shares_schedule(&self, job: &SearchJob) -> bool {
        self.share_schedule && job.rolled != 0 && job.version_count() <= u64::from(self.context.capacity)
    }

    /// `job` as the search for it will run: a rolled job that is searched one version after
    /// another starts with its first version.
    fn as_searched(&self, job: &SearchJob) -> SearchJob {
        if job.rolled != 0 && !self.shares_schedule(job) { job.for_version(job.header.version) } else { *job }
    }

    /// Whether the adapter is a software rasterizer on the CPU.
    pub fn is_software(&self) -> bool {
        self.info.software
    }

    /// The adapter this backend runs on.
    pub fn adapter(&self) -> &AdapterInfo {
        &self.info
    }

    /// Hits one dispatch can hold.
    pub fn result_capacity(&self) -> u32 {
        self.context.capacity
    }

    /// The batch size the next search starts with, in hashes (nonces times versions).
    pub fn batch_size(&self) -> u64 {
        self.batch
    }

    /// Nonces per batch for a search of `versions` versions per nonce: the batch size is kept
    /// in hashes, so a rolled range's dispatches take as long as a single-version range's.
    fn batch_nonces(&self, versions: u64) -> u64 {
        (self.batch / versions.max(1)).max(MIN_BATCH)
    }

    /// Steers the batch size from the `count` hashes of a full-size batch that kept the device
    /// busy for `busy`: toward `TARGET_DISPATCH_TIME`, at most 4× up or down per batch.
    fn tune(&mut self, count: u64, busy: Duration) {
        let busy = busy.as_secs_f64().max(1e-6);
        let ideal = count as f64 * TARGET_DISPATCH_TIME.as_secs_f64() / busy;
        let next = (ideal as u64).clamp(self.batch / 4, self.batch.saturating_mul(4));
        self.batch = next.clamp(MIN_BATCH, MAX_BATCH) / MIN_BATCH * MIN_BATCH;
    }

    /// Searches `job`, whose first batches may already be `in_flight` (queued ahead), and
    /// queues `upcoming`'s first batch into `self.ahead` once `job`'s last one is submitted.
    fn run(
        &mut self,
        job: &SearchJob,
        upcoming: Option<&SearchJob>,
        cancel: &AtomicBool,
        base: &mut JobUniform,
        in_flight: &mut VecDeque<Batch>,
        candidates: &mut Vec<(u32, u32)>,
    ) -> Result<u64, SearchError> {
        let versions = u64::from(base.versions());
        let capacity = u64::from(self.context.capacity);
        // Ranges to search again in pieces after their batch overflowed the result buffer.
        let mut pieces: VecDeque<(u64, u64)> = VecDeque::new();
        let mut next = in_flight.back().map_or(0, |b| b.offset + b.count);
        let mut hashes = 0u64;
        // The largest batch whose expected hits fit the result buffer (easy targets).
        let mut hit_bound = MAX_BATCH;
        let mut last_done: Option<Instant> = None;
        let mut free: Vec<usize> = (0..SLOTS).rev().filter(|slot| in_flight.iter().all(|b| b.slot != *slot)).collect();
        loop {
            while !cancel.load(Ordering::Relaxed) {
                let Some(&slot) = free.last() else { break };
                let (offset, count, tunable) = if let Some((offset, count)) = pieces.pop_front() {
                    (offset, count, false)
                } else if next < job.count {
                    let full = self.batch_nonces(versions);
                    let count = full.min(hit_bound).min(job.count - next);
                    next += count;
                    (next - count, count, count == full)
                } else {
                    if let Some(upcoming) = upcoming.filter(|_| self.ahead.is_none()) {
                        free.pop();
                        self.ahead = Some(self.queue_ahead(slot, upcoming)?);
                    }
                    break;
                };
                free.pop();
                base.first_nonce = (u64::from(job.start) + offset) as u32;
                base.count = count as u32;
                let submission = self.context.submit(slot, base)?;
                in_flight.push_back(Batch { slot, offset, count, submitted: Instant::now(), submission, tunable });
            }
            let Some(batch) = in_flight.front() else { break };
            let result = self.context.collect(batch)?;
            let Some(batch) = in_flight.pop_front() else { break };
            free.push(batch.slot);
            let done = Instant::now();
            if result.total > capacity {
                // Dropped hits: search the batch again in pieces expected to hold at most half
                // the capacity each. A piece of at most capacity / versions nonces cannot
                // overflow (`shares_schedule` keeps versions <= capacity), and pieces halve
                // at least until they reach it.
                let parts = (2 * result.total).div_ceil(capacity).clamp(2, batch.count);
                let size = batch.count.div_ceil(parts);
                let mut offset = batch.offset;
                let end = batch.offset + batch.count;
                let mut split = Vec::new();
                while offset < end {
                    let count = size.min(end - offset);
                    split.push((offset, count));
                    offset += count;
                }
                for piece in split.into_iter().rev() {
                    pieces.push_front(piece);
                }
                hit_bound = hit_bound.min(size.max(1));
            } else {
                hashes += batch.count * versions;
                candidates.extend(result.hits);
                if batch.tunable {
                    let started = last_done.map_or(batch.submitted, |t| t.max(batch.submitted));
                    self.tune(batch.count * versions, done.saturating_duration_since(started));
                }
            }
            last_done = Some(done);
        }
        Ok(hashes)
    }

    /// Submits the first batch of `job` in `slot`, to be picked up by the search for `job`.
    /// Its timing steers nothing: the device was still busy with the batch before it.
    fn queue_ahead(&self, slot: usize, job: &SearchJob) -> Result<Ahead, SearchError> {
        let mut uniform = JobUniform::new(job, self.context.capacity);
        let count = self.batch_nonces(u64::from(uniform.versions())).min(job.count);
        uniform.count = count as u32;
        let submission = self.context.submit(slot, &uniform)?;
        let batch = Batch { slot, offset: 0, count, submitted: Instant::now(), submission, tunable: false };
        Ok(Ahead { job: *job, batch })
    }

    /// The batches already queued for `job`: the one queued ahead if it begins `job`'s range.
    /// One queued for a different search is waited out and discarded.
    fn take_ahead(&mut self, job: &SearchJob) -> VecDeque<Batch> {
        match self.ahead.take() {
            Some(ahead) if ahead.begins(job) => VecDeque::from([ahead.batch]),
            Some(ahead) => {
                self.context.drain(VecDeque::from([ahead.batch]));
                VecDeque::new()
            }
            None => VecDeque::new(),
        }
    }

    /// Whether a batch of an announced search is queued (see `Backend::search_ahead`).
    pub fn has_queued_ahead(&self) -> bool {
        self.ahead.is_some()
    }
}

impl Backend for GpuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Gpu
    }

    fn device(&self) -> String {
        if self.info.software { format!("{} (software)", self.info.name) } else { self.info.name.clone() }
    }

    fn search(&mut self, job: &SearchJob, cancel: &AtomicBool) -> Result<SearchReport, SearchError> {
        self.search_ahead(job, None, cancel)
    }

    fn search_ahead(
        &mut self,
        job: &SearchJob,
        next: Option<&SearchJob>,
        cancel: &AtomicBool,
    ) -> Result<SearchReport, SearchError> {
        if job.rolled != 0 && !self.shares_schedule(job) {
            return super::search_each_version(job, next, cancel, |one, next, cancel| {
                self.search_ahead(one, next, cancel)
            });
        }
        let next = next.map(|next| self.as_searched(next));
        let started = Instant::now();
        if job.count == 0 {
            return Err(SearchError::EmptyRange);
        }
        if u64::from(job.start) + job.count > NONCE_SPACE {
            return Err(SearchError::RangePastEnd { start: job.start, count: job.count });
        }
        let mut base = JobUniform::new(job, self.context.capacity);
        let mut in_flight = self.take_ahead(job);
        let mut candidates = Vec::new();
        let hashes = match self.run(job, next.as_ref(), cancel, &mut base, &mut in_flight, &mut candidates) {
            Ok(hashes) => hashes,
            Err(error) => {
                self.context.drain(in_flight);
                if let Some(ahead) = self.ahead.take() {
                    self.context.drain(VecDeque::from([ahead.batch]));
                }
                return Err(error);
            }
        };
        candidates.sort_unstable();
        candidates.dedup();
        // The version index comes from the device: one out of range is dropped, not trusted.
        let versions = job.versions();
        let mut hits: Vec<Hit> = candidates
            .into_iter()
            .filter_map(|(nonce, index)| verify_hit(&job.for_version(*versions.get(index as usize)?), nonce))
            .collect();
        hits.sort_unstable();
        Ok(SearchReport { hashes, elapsed: started.elapsed(), hits })
    }
}
