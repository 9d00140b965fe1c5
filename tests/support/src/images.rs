//! Offline container images for tests, written as `docker save` archives or
//! OCI image layouts (a tar bundle for `ctr images import`, or a directory for
//! `trivy image --input`).
//!
//! Everything is deterministic: fixed mtimes and timestamps, uid/gid 0,
//! sorted tar entries and compact JSON with sorted keys, so image ids and
//! digests can be predicted. The CRI image id is `sha256:` + the sha256 of
//! the config JSON ([`BuiltImage::image_id`]).
//!
//! A layer can also be a tar file already on disk ([`Layer::from_tar_file`],
//! e.g. the 200 MB Debian root filesystem of [`crate::debian`]): it is never
//! held in memory by [`write_docker_archive`], [`OciLayout::write_tar`] or
//! [`OciLayout::write_dir`], which stream it from disk.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The mtime of every tar entry.
pub const MTIME: u64 = 1_700_000_000;
/// The default `created` time of the config and of every history entry.
pub const CREATED: &str = "2024-01-01T00:00:00Z";
/// The default `PATH` entry of `Env`.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The packages of [`alpine_like`] unless overridden.
pub const DEFAULT_APK_PACKAGES: [(&str, &str); 3] =
    [("musl", "1.1.24-r2"), ("busybox", "1.31.1-r19"), ("zlib", "1.2.11-r3")];

pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// containerd's index annotation naming the image on import.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// The OCI index annotation holding the tag.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// Splits `registry/repo:tag` into `("registry/repo", Some("tag"))`; a
/// digest reference (`repo@sha256:…`) keeps only its repository.
pub fn split_ref(reference: &str) -> (&str, Option<&str>) {
    let name = reference.split_once('@').map_or(reference, |(name, _)| name);
    match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => (&name[..i], Some(&name[i + 1..])),
        _ => (name, None),
    }
}

/// One regular file of a layer. `path` has no leading `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    pub path: String,
    pub mode: u32,
    pub contents: Vec<u8>,
}

/// An uncompressed layer tar on disk: its path, size and diff id
/// (`sha256:<hex>` of its bytes), which the caller vouches for (see
/// [`TarFile::hash`]). Writers check the size before streaming it.
///
/// With `gzip` (see [`TarFile::gzipped`]) the image holds the layer
/// compressed, as an image pulled from a registry does: that file (whose
/// `diff_id` is the compressed blob's digest) is the blob, and this one's
/// digest stays the diff id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarFile {
    pub path: PathBuf,
    pub size: u64,
    pub diff_id: String,
    pub gzip: Option<Box<TarFile>>,
}

impl TarFile {
    /// Reads `path` once to compute its size and diff id.
    pub fn hash(path: &Path) -> io::Result<Self> {
        let mut hasher = HashingWriter::new(io::sink());
        io::copy(&mut fs::File::open(path)?, &mut hasher)?;
        let (_, diff_id, size) = hasher.finish();
        Ok(Self {
            path: path.to_owned(),
            size,
            diff_id,
            gzip: None,
        })
    }

    /// This layer, held gzip-compressed: `<path>.gz` (made with `gzip -n`,
    /// which is deterministic, on first use and kept beside the tar with its
    /// digest in `<path>.gz.sha256`).
    pub fn gzipped(self) -> io::Result<Self> {
        let gz = PathBuf::from(format!("{}.gz", self.path.display()));
        let record = PathBuf::from(format!("{}.gz.sha256", self.path.display()));
        let recorded = fs::read_to_string(&record).ok().and_then(|text| {
            let (digest, size) = text.trim().split_once(' ')?;
            let size: u64 = size.parse().ok()?;
            let fits = fs::metadata(&gz).is_ok_and(|m| m.len() == size) && digest.starts_with("sha256:");
            fits.then(|| (digest.to_owned(), size))
        });
        let (digest, size) = match recorded {
            Some(found) => found,
            None => {
                let tmp = temp_sibling(&gz);
                let status = std::process::Command::new("gzip")
                    .args(["-n", "-c"])
                    .arg(&self.path)
                    .stdout(fs::File::create(&tmp)?)
                    .status()?;
                if !status.success() {
                    let _ = fs::remove_file(&tmp);
                    return Err(io::Error::other(format!(
                        "gzip {} failed: {status}",
                        self.path.display()
                    )));
                }
                fs::rename(&tmp, &gz)?;
                let hashed = Self::hash(&gz)?;
                write_atomic(&record, format!("{} {}", hashed.diff_id, hashed.size).as_bytes())?;
                (hashed.diff_id, hashed.size)
            }
        };
        Ok(Self {
            gzip: Some(Box::new(Self {
                path: gz,
                size,
                diff_id: digest,
                gzip: None,
            })),
            ..self
        })
    }

    /// The file the image holds as this layer's blob.
    fn blob(&self) -> &TarFile {
        self.gzip.as_deref().unwrap_or(self)
    }

    fn media_type(&self) -> &'static str {
        if self.gzip.is_some() {
            MEDIA_TYPE_LAYER_GZIP
        } else {
            MEDIA_TYPE_LAYER
        }
    }

    /// Opens the file, checking that its size is still [`TarFile::size`].
    fn open(&self) -> io::Result<io::Take<fs::File>> {
        let file = fs::File::open(&self.path)?;
        let len = file.metadata()?.len();
        if len != self.size {
            return Err(io::Error::other(format!(
                "layer tar {} is {len} bytes, expected {} (changed since it was hashed?)",
                self.path.display(),
                self.size
            )));
        }
        Ok(file.take(self.size))
    }

    fn read(&self) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::with_capacity(self.size as usize);
        self.open()?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }
}

/// A layer: files (parent directories are added as 0755 entries) and the
/// `created_by` of its history entry; or, with `tar_file`, a tar already on
/// disk ([`Layer::from_tar_file`]), which then is the whole layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layer {
    pub files: Vec<File>,
    pub created_by: Option<String>,
    pub tar_file: Option<TarFile>,
}

impl Layer {
    pub fn new() -> Self {
        Self::default()
    }

    /// A layer that is the tar file `tar` on disk, used as is (not read
    /// until an image is written; never copied into memory by the streaming
    /// writers).
    pub fn from_tar_file(tar: TarFile) -> Self {
        Self {
            tar_file: Some(tar),
            ..Self::default()
        }
    }

    /// `sha256:<hex>` of the layer tar.
    pub fn diff_id(&self) -> String {
        match &self.tar_file {
            Some(t) => t.diff_id.clone(),
            None => sha256_digest(&self.tar()),
        }
    }

    /// Adds a file; a leading `/` is ignored, a later file with the same path
    /// wins. Panics on a [`Layer::from_tar_file`] layer.
    pub fn file(mut self, path: &str, mode: u32, contents: impl Into<Vec<u8>>) -> Self {
        if let Some(t) = &self.tar_file {
            panic!("cannot add {path} to the layer read from {}", t.path.display());
        }
        self.files.push(File {
            path: path.trim_start_matches('/').to_owned(),
            mode,
            contents: contents.into(),
        });
        self
    }

    pub fn created_by(mut self, command: &str) -> Self {
        self.created_by = Some(command.to_owned());
        self
    }

    /// The uncompressed layer tar (its sha256 is the diff id). A
    /// [`Layer::from_tar_file`] layer is read from disk (panics if it cannot be).
    pub fn tar(&self) -> Vec<u8> {
        if let Some(t) = &self.tar_file {
            return t
                .read()
                .unwrap_or_else(|e| panic!("reading layer {}: {e}", t.path.display()));
        }
        let mut entries: BTreeMap<String, Option<&File>> = BTreeMap::new();
        for file in &self.files {
            for (i, _) in file.path.match_indices('/') {
                entries.insert(file.path[..=i].to_owned(), None);
            }
            entries.insert(file.path.clone(), Some(file));
        }
        let mut tar = TarWriter::new(Vec::new());
        for (path, file) in entries {
            match file {
                None => tar.dir(&path),
                Some(f) => tar.file(&path, f.mode, &f.contents),
            }
            .expect("writing a tar into memory");
        }
        tar.finish().expect("finishing a tar in memory")
    }
}

/// A test image under construction. See [`alpine_like`], [`plain`] and
/// [`pause_image`] for the common ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestImage {
    refs: Vec<String>,
    layers: Vec<Layer>,
    env: Vec<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    labels: BTreeMap<String, String>,
    created: String,
    history_created: bool,
}

impl TestImage {
    /// An image named `reference` (a full ref such as
    /// `localhost/test/app:1`), with `Env` = [`DEFAULT_PATH`] and no layers.
    pub fn new(reference: &str) -> Self {
        Self {
            refs: vec![reference.to_owned()],
            layers: Vec::new(),
            env: vec![DEFAULT_PATH.to_owned()],
            entrypoint: None,
            cmd: None,
            labels: BTreeMap::new(),
            created: CREATED.to_owned(),
            history_created: true,
        }
    }

    /// Adds another name for the same image.
    pub fn tag(mut self, reference: &str) -> Self {
        self.refs.push(reference.to_owned());
        self
    }

    pub fn refs(&self) -> &[String] {
        &self.refs
    }

    pub fn layer(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }

    /// Adds a file to the last layer (starting one if there is none, or if
    /// the last is a [`Layer::from_tar_file`] layer).
    pub fn file(mut self, path: &str, mode: u32, contents: impl Into<Vec<u8>>) -> Self {
        let last = match self.layers.pop() {
            Some(layer) if layer.tar_file.is_some() => {
                self.layers.push(layer);
                Layer::default()
            }
            other => other.unwrap_or_default(),
        };
        self.layers.push(last.file(path, mode, contents));
        self
    }

    /// Appends a `KEY=value` entry to `Env`.
    pub fn env(mut self, entry: &str) -> Self {
        self.env.push(entry.to_owned());
        self
    }

    pub fn entrypoint(mut self, args: &[&str]) -> Self {
        self.entrypoint = Some(args.iter().map(|s| s.to_string()).collect());
        self
    }

    pub fn cmd(mut self, args: &[&str]) -> Self {
        self.cmd = Some(args.iter().map(|s| s.to_string()).collect());
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Sets `created` of the config and of every history entry.
    pub fn created(mut self, timestamp: &str) -> Self {
        self.created = timestamp.to_owned();
        self
    }

    /// Leaves `created` out of the history entries: Trivy 0.76 then panics
    /// when it reads the image from containerd, which makes a realistic
    /// failed scan.
    pub fn without_history_created(mut self) -> Self {
        self.history_created = false;
        self
    }

    /// Serialises layers, config and manifest. [`Layer::from_tar_file`]
    /// layers are not read: they stay on disk (see [`BuiltImage::layer_files`]).
    pub fn build(&self) -> BuiltImage {
        let layers: Vec<Vec<u8>> = self
            .layers
            .iter()
            .map(|l| if l.tar_file.is_some() { Vec::new() } else { l.tar() })
            .collect();
        let layer_files: Vec<Option<TarFile>> = self.layers.iter().map(|l| l.tar_file.clone()).collect();
        let diff_ids: Vec<String> = layers
            .iter()
            .zip(&layer_files)
            .map(|(bytes, file)| match file {
                Some(t) => t.diff_id.clone(),
                None => sha256_digest(bytes),
            })
            .collect();
        let mut config = serde_json::Map::new();
        if let Some(cmd) = &self.cmd {
            config.insert("Cmd".into(), json!(cmd));
        }
        if let Some(entrypoint) = &self.entrypoint {
            config.insert("Entrypoint".into(), json!(entrypoint));
        }
        config.insert("Env".into(), json!(self.env));
        if !self.labels.is_empty() {
            config.insert("Labels".into(), json!(self.labels));
        }
        let history: Vec<Value> = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                let by = layer
                    .created_by
                    .clone()
                    .unwrap_or_else(|| format!("scour-testkit layer {i}"));
                if self.history_created {
                    json!({"created": self.created, "created_by": by})
                } else {
                    json!({"created_by": by})
                }
            })
            .collect();
        let config = to_json(&json!({
            "architecture": "amd64",
            "config": config,
            "created": self.created,
            "history": history,
            "os": "linux",
            "rootfs": {"diff_ids": diff_ids, "type": "layers"},
        }));
        let mut built = BuiltImage {
            refs: self.refs.clone(),
            config,
            layers,
            layer_files,
            manifest: Vec::new(),
        };
        let descriptor = |media_type: &str, digest: &str, size: u64| json!({"digest": digest, "mediaType": media_type, "size": size});
        built.manifest = to_json(&json!({
            "config": descriptor(MEDIA_TYPE_CONFIG, &built.image_id(), built.config.len() as u64),
            "layers": (0..built.layers.len())
                .map(|i| descriptor(built.layer_media_type(i), &built.layer_blob_digest(i), built.layer_size(i)))
                .collect::<Vec<_>>(),
            "mediaType": MEDIA_TYPE_MANIFEST,
            "schemaVersion": 2,
        }));
        built
    }

    /// The predicted CRI image id, `sha256:<sha256 of the config>`.
    pub fn image_id(&self) -> String {
        self.build().image_id()
    }

    /// The predicted manifest digest (what `repo@sha256:…` refers to).
    pub fn manifest_digest(&self) -> String {
        self.build().manifest_digest()
    }
}

/// The serialised blobs of a [`TestImage`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltImage {
    pub refs: Vec<String>,
    /// The config JSON.
    pub config: Vec<u8>,
    /// Uncompressed layer tars, bottom first; **empty** for a layer that is
    /// a tar file on disk (that layer is in `layer_files` instead).
    pub layers: Vec<Vec<u8>>,
    /// Per layer, the tar file on disk it is ([`Layer::from_tar_file`]), or
    /// None when its bytes are in `layers`.
    pub layer_files: Vec<Option<TarFile>>,
    /// The OCI manifest JSON.
    pub manifest: Vec<u8>,
}

impl BuiltImage {
    /// `sha256:` + sha256 of the config: the CRI image id, Trivy's `ImageID`.
    pub fn image_id(&self) -> String {
        sha256_digest(&self.config)
    }

    pub fn manifest_digest(&self) -> String {
        sha256_digest(&self.manifest)
    }

    pub fn diff_ids(&self) -> Vec<String> {
        (0..self.layers.len()).map(|i| self.layer_digest(i)).collect()
    }

    /// `sha256:<hex>` of layer `i` uncompressed: its diff id.
    pub fn layer_digest(&self, i: usize) -> String {
        match &self.layer_files[i] {
            Some(t) => t.diff_id.clone(),
            None => sha256_digest(&self.layers[i]),
        }
    }

    /// The digest of layer `i`'s blob as the image holds it: its diff id,
    /// or the compressed file's digest for a [`TarFile::gzipped`] layer.
    pub fn layer_blob_digest(&self, i: usize) -> String {
        match &self.layer_files[i] {
            Some(t) => t.blob().diff_id.clone(),
            None => self.layer_digest(i),
        }
    }

    fn layer_media_type(&self, i: usize) -> &'static str {
        self.layer_files[i]
            .as_ref()
            .map_or(MEDIA_TYPE_LAYER, TarFile::media_type)
    }

    /// Size in bytes of layer `i`'s blob (compressed, when it is).
    pub fn layer_size(&self, i: usize) -> u64 {
        match &self.layer_files[i] {
            Some(t) => t.blob().size,
            None => self.layers[i].len() as u64,
        }
    }

    /// Layer `i` as a blob to write, as the image holds it.
    fn layer_blob(&self, i: usize) -> Blob<'_> {
        match self.layer_tar(i) {
            Blob::File(t) => Blob::File(t.blob()),
            uncompressed => uncompressed,
        }
    }

    /// Layer `i` uncompressed, as a blob to write.
    fn layer_tar(&self, i: usize) -> Blob<'_> {
        match &self.layer_files[i] {
            Some(t) => Blob::File(t),
            None => Blob::Bytes(&self.layers[i]),
        }
    }

    /// `<repo>@<manifest digest>` for each distinct repository of `refs`.
    pub fn digest_refs(&self) -> Vec<String> {
        let digest = self.manifest_digest();
        let repos: BTreeSet<&str> = self.refs.iter().map(|r| split_ref(r).0).collect();
        repos.into_iter().map(|repo| format!("{repo}@{digest}")).collect()
    }

    /// Config + layers + manifest bytes (what containerd 1.6 CRI reports as `size`).
    pub fn content_size(&self) -> u64 {
        (self.config.len() + self.manifest.len()) as u64
            + (0..self.layers.len()).map(|i| self.layer_size(i)).sum::<u64>()
    }
}

/// An apk package for [`alpine_exact`]; `origin` is the source package name
/// that Trivy looks advisories up by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApkPackage {
    pub name: String,
    pub version: String,
    pub origin: String,
}

impl ApkPackage {
    /// A package that is its own origin.
    pub fn new(name: &str, version: &str) -> Self {
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            origin: name.to_owned(),
        }
    }

    pub fn origin(mut self, origin: &str) -> Self {
        self.origin = origin.to_owned();
        self
    }

    /// The dummy file this package installs.
    pub fn file_path(&self) -> String {
        format!("usr/share/doc/{}/VERSION", self.name)
    }

    /// The stanza of `/lib/apk/db/installed`, ending with a blank line.
    pub fn stanza(&self) -> String {
        let ApkPackage { name, version, origin } = self;
        let id = Sha256::digest(format!("{name}-{version}"));
        let contents = self.file_contents();
        format!(
            "C:Q1{checksum}\nP:{name}\nV:{version}\nA:x86_64\nS:{size}\nI:{size}\n\
             T:{name} (scour test package)\nU:https://example.invalid/{name}\nL:MIT\n\
             o:{origin}\nm:Scour Tests <tests@example.invalid>\nt:1600000000\nc:{commit}\n\
             F:usr/share/doc/{name}\nR:VERSION\na:0:0:644\nZ:Q1{file_checksum}\n\n",
            checksum = base64(&id[..20]),
            size = 4096 + contents.len(),
            commit = sha256_hex(name.as_bytes())[..40].to_owned(),
            file_checksum = base64(&Sha256::digest(&contents)[..20]),
        )
    }

    fn file_contents(&self) -> Vec<u8> {
        format!("{} {}\n", self.name, self.version).into_bytes()
    }
}

/// A fake Alpine image `tag` (e.g. `docker.io/library/alpine:3.12`) of
/// release `version` (e.g. `3.12.0`) with [`DEFAULT_APK_PACKAGES`], where
/// `packages` (name, version) override versions by name or add packages.
pub fn alpine_like(tag: &str, version: &str, packages: &[(&str, &str)]) -> TestImage {
    let mut merged: BTreeMap<&str, &str> = DEFAULT_APK_PACKAGES.into_iter().collect();
    merged.extend(packages.iter().copied());
    let packages: Vec<ApkPackage> = merged.into_iter().map(|(n, v)| ApkPackage::new(n, v)).collect();
    alpine_exact(tag, version, &packages)
}

/// A fake Alpine image with exactly `packages` installed: one layer with
/// `/etc/alpine-release`, `/etc/os-release`, `/etc/apk/repositories`,
/// `/lib/apk/db/installed` and one dummy file per package; `Cmd ["/bin/sh"]`.
pub fn alpine_exact(tag: &str, version: &str, packages: &[ApkPackage]) -> TestImage {
    let minor: String = version.split('.').take(2).collect::<Vec<_>>().join(".");
    let os_release = format!(
        "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID={version}\nPRETTY_NAME=\"Alpine Linux v{minor}\"\n\
         HOME_URL=\"https://alpinelinux.org/\"\nBUG_REPORT_URL=\"https://gitlab.alpinelinux.org/alpine/aports/-/issues\"\n"
    );
    let mut layer = Layer::new()
        .created_by(&format!("scour-testkit alpine {version}"))
        .file("etc/alpine-release", 0o644, format!("{version}\n"))
        .file("etc/os-release", 0o644, os_release)
        .file(
            "etc/apk/repositories",
            0o644,
            format!("https://dl-cdn.alpinelinux.org/alpine/v{minor}/main\n"),
        )
        .file(
            "lib/apk/db/installed",
            0o644,
            packages.iter().map(ApkPackage::stanza).collect::<String>(),
        );
    for package in packages {
        layer = layer.file(&package.file_path(), 0o644, package.file_contents());
    }
    TestImage::new(tag).layer(layer).cmd(&["/bin/sh"])
}

/// An image without OS files: one layer with `/hello.txt` naming `tag`
/// (so that plain images of different tags have different ids).
pub fn plain(tag: &str) -> TestImage {
    TestImage::new(tag)
        .file("/hello.txt", 0o644, format!("hello from {tag}\n"))
        .cmd(&["/hello"])
}

/// An image holding `binary` as `/pause` (mode 0755) with `Entrypoint
/// ["/pause"]`; see [`build_static_pause`].
pub fn pause_image(tag: &str, binary: &[u8]) -> TestImage {
    TestImage::new(tag)
        .layer(
            Layer::new()
                .created_by("COPY pause /pause")
                .file("/pause", 0o755, binary),
        )
        .entrypoint(&["/pause"])
}

/// A `docker save` archive of `image`: `manifest.json` (all refs as
/// `RepoTags`), `<config hex>.json` and `<diff id hex>/layer.tar`. In
/// memory: a [`Layer::from_tar_file`] layer is read into it (panics if it
/// cannot be); [`write_docker_archive`] streams instead.
pub fn docker_archive(image: &TestImage) -> Vec<u8> {
    let mut tar = TarWriter::new(Vec::new());
    write_docker_archive_to(&image.build(), &mut tar).unwrap_or_else(|e| panic!("writing a docker archive: {e}"));
    tar.finish().expect("finishing a tar in memory")
}

fn write_docker_archive_to<W: Write>(built: &BuiltImage, tar: &mut TarWriter<W>) -> io::Result<()> {
    let config_name = format!("{}.json", sha256_hex(&built.config));
    let layer_names: Vec<String> = built
        .diff_ids()
        .iter()
        .map(|d| format!("{}/layer.tar", d.trim_start_matches("sha256:")))
        .collect();
    let manifest = to_json(&json!([{
        "Config": config_name,
        "Layers": layer_names,
        "RepoTags": built.refs,
    }]));
    let mut files: BTreeMap<String, Blob<'_>> = BTreeMap::new();
    // A docker archive holds its layers uncompressed, as `docker save` does.
    for (i, name) in layer_names.iter().enumerate() {
        files.insert(name.clone(), built.layer_tar(i));
    }
    files.insert(config_name, Blob::Bytes(&built.config));
    files.insert("manifest.json".into(), Blob::Bytes(&manifest));
    for (path, blob) in files {
        if let Some((dir, _)) = path.split_once('/') {
            tar.dir(&format!("{dir}/"))?;
        }
        tar.blob(&path, 0o644, &blob)?;
    }
    Ok(())
}

/// Writes [`docker_archive`] to `path` (via a temp file and rename),
/// streaming [`Layer::from_tar_file`] layers from disk.
pub fn write_docker_archive(image: &TestImage, path: &Path) -> io::Result<BuiltImage> {
    let built = image.build();
    write_atomic_with(path, |out| {
        let mut tar = TarWriter::new(out);
        write_docker_archive_to(&built, &mut tar)?;
        tar.finish().map(drop)
    })?;
    Ok(built)
}

/// An OCI image layout holding several images with deduplicated blobs.
/// `index.json` has one entry per ref, annotated with
/// [`ANNOTATION_IMAGE_NAME`] (the full ref) and [`ANNOTATION_REF_NAME`] (the
/// tag); with [`OciLayout::digest_refs`] also one `<repo>@sha256:<manifest>`
/// entry per image and repository, which makes CRI report `repoDigests`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OciLayout {
    images: Vec<TestImage>,
    digest_refs: bool,
}

impl OciLayout {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn image(mut self, image: TestImage) -> Self {
        self.images.push(image);
        self
    }

    pub fn images(mut self, images: impl IntoIterator<Item = TestImage>) -> Self {
        self.images.extend(images);
        self
    }

    pub fn digest_refs(mut self, yes: bool) -> Self {
        self.digest_refs = yes;
        self
    }

    /// The built images, in insertion order.
    pub fn built(&self) -> Vec<BuiltImage> {
        self.images.iter().map(TestImage::build).collect()
    }

    /// The layout's files: relative path → contents, sorted by path. A
    /// [`Layer::from_tar_file`] layer is read into memory (panics if it
    /// cannot be).
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        self.files_of(&self.built())
            .into_iter()
            .map(|(path, blob)| {
                let bytes = blob.to_vec().unwrap_or_else(|e| panic!("reading {path}: {e}"));
                (path, bytes)
            })
            .collect()
    }

    fn files_of<'a>(&self, built: &'a [BuiltImage]) -> BTreeMap<String, Blob<'a>> {
        let mut files = BTreeMap::new();
        let mut manifests = Vec::new();
        for image in built {
            let blob_path = |digest: &str| format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
            files.insert(blob_path(&image.image_id()), Blob::Bytes(&image.config));
            for i in 0..image.layers.len() {
                files.insert(blob_path(&image.layer_blob_digest(i)), image.layer_blob(i));
            }
            files.insert(blob_path(&image.manifest_digest()), Blob::Bytes(&image.manifest));
            let entry = |name: &str, ref_name: &str| {
                json!({
                    "annotations": {ANNOTATION_IMAGE_NAME: name, ANNOTATION_REF_NAME: ref_name},
                    "digest": image.manifest_digest(),
                    "mediaType": MEDIA_TYPE_MANIFEST,
                    "size": image.manifest.len(),
                })
            };
            for reference in &image.refs {
                manifests.push(entry(reference, split_ref(reference).1.unwrap_or("latest")));
            }
            if self.digest_refs {
                for reference in image.digest_refs() {
                    manifests.push(entry(&reference, &image.manifest_digest()));
                }
            }
        }
        let index = json!({"manifests": manifests, "mediaType": MEDIA_TYPE_INDEX, "schemaVersion": 2});
        files.insert("index.json".into(), Blob::Owned(to_json(&index)));
        files.insert("oci-layout".into(), Blob::Bytes(br#"{"imageLayoutVersion":"1.0.0"}"#));
        files
    }

    fn write_tar_to<W: Write>(&self, built: &[BuiltImage], tar: &mut TarWriter<W>) -> io::Result<()> {
        tar.dir("blobs/")?;
        tar.dir("blobs/sha256/")?;
        for (path, blob) in self.files_of(built) {
            tar.blob(&path, 0o644, &blob)?;
        }
        Ok(())
    }

    /// The layout as a tar bundle (for `ctr images import`), in memory; a
    /// [`Layer::from_tar_file`] layer is read into it (panics if it cannot be).
    pub fn tar(&self) -> Vec<u8> {
        let mut tar = TarWriter::new(Vec::new());
        self.write_tar_to(&self.built(), &mut tar)
            .unwrap_or_else(|e| panic!("writing an OCI layout tar: {e}"));
        tar.finish().expect("finishing a tar in memory")
    }

    /// Writes [`OciLayout::tar`] to `path` (via a temp file and rename),
    /// streaming [`Layer::from_tar_file`] layers from disk (each blob once).
    pub fn write_tar(&self, path: &Path) -> io::Result<Vec<BuiltImage>> {
        let built = self.built();
        write_atomic_with(path, |out| {
            let mut tar = TarWriter::new(out);
            self.write_tar_to(&built, &mut tar)?;
            tar.finish().map(drop)
        })?;
        Ok(built)
    }

    /// Writes the layout into directory `dir` (created if missing; for
    /// `trivy image --input`, which wants OCI layouts as directories). A
    /// [`Layer::from_tar_file`] blob is hard-linked to its file when possible,
    /// else copied.
    pub fn write_dir(&self, dir: &Path) -> io::Result<Vec<BuiltImage>> {
        let built = self.built();
        std::fs::create_dir_all(dir.join("blobs/sha256"))?;
        for (path, blob) in self.files_of(&built) {
            let dest = dir.join(path);
            match blob {
                Blob::File(t) => {
                    t.open()?;
                    let tmp = temp_sibling(&dest);
                    fs::hard_link(&t.path, &tmp)
                        .or_else(|_| fs::copy(&t.path, &tmp).map(drop))
                        .and_then(|()| fs::rename(&tmp, &dest))
                        .inspect_err(|_| {
                            let _ = fs::remove_file(&tmp);
                        })?;
                }
                other => write_atomic(&dest, other.bytes())?,
            }
        }
        Ok(built)
    }
}

/// The source of the static pause binary: sleeps in `pause()`, exits 0 on
/// SIGINT/SIGTERM and reaps children on SIGCHLD.
pub const PAUSE_C: &str = r#"#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void quit(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
    signal(SIGINT, quit);
    signal(SIGTERM, quit);
    signal(SIGCHLD, reap);
    for (;;) pause();
}
"#;

/// `<target>/testkit`, the default cache for [`build_static_pause`].
pub fn testkit_cache_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::guests::workspace_root().join("target"))
        .join("testkit")
}

/// Compiles [`PAUSE_C`] with `gcc -static -Os -s` into
/// `dir/pause-<source hash>` unless it is already there, and returns its
/// path. Safe to call concurrently. Panics if gcc fails.
pub fn build_static_pause(dir: &Path) -> PathBuf {
    let hash = &sha256_hex(PAUSE_C.as_bytes())[..16];
    let out = dir.join(format!("pause-{hash}"));
    if out.is_file() {
        return out;
    }
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let tmp = temp_sibling(&out);
    let src = tmp.with_extension("c");
    std::fs::write(&src, PAUSE_C).unwrap_or_else(|e| panic!("writing {}: {e}", src.display()));
    let result = Command::new("gcc")
        .args(["-static", "-Os", "-s", "-o"])
        .arg(&tmp)
        .arg(&src)
        .output();
    let _ = std::fs::remove_file(&src);
    match result {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "gcc -static failed ({}): {} (needs gcc and libc6-dev)",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("running gcc: {e} (needs gcc and libc6-dev)"),
    }
    std::fs::rename(&tmp, &out).unwrap_or_else(|e| panic!("renaming to {}: {e}", out.display()));
    out
}

/// [`build_static_pause`] in [`testkit_cache_dir`], read into memory.
pub fn static_pause_binary() -> Vec<u8> {
    let path = build_static_pause(&testkit_cache_dir());
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Writes `bytes` to a temp file next to `path`, then renames it over `path`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_sibling(path);
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}

/// Lets `write` fill a buffered temp file next to `path`, then renames it
/// over `path`; the temp file is removed on failure.
pub(crate) fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<fs::File>) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut out = BufWriter::with_capacity(1 << 20, fs::File::create(&tmp)?);
        write(&mut out)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

pub(crate) fn temp_sibling(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

fn to_json(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON values serialise")
}

/// Standard base64 with padding (for apk's `Q1` checksums).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | ((b as u32) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A blob of an archive: bytes in memory or a layer tar on disk.
enum Blob<'a> {
    Bytes(&'a [u8]),
    Owned(Vec<u8>),
    File(&'a TarFile),
}

impl Blob<'_> {
    /// The bytes of an in-memory blob (empty for a file).
    fn bytes(&self) -> &[u8] {
        match self {
            Blob::Bytes(b) => b,
            Blob::Owned(b) => b,
            Blob::File(_) => &[],
        }
    }

    fn to_vec(&self) -> io::Result<Vec<u8>> {
        match self {
            Blob::File(t) => t.read(),
            other => Ok(other.bytes().to_vec()),
        }
    }
}

/// Tar output with fixed metadata: uid/gid 0, mtime [`MTIME`].
pub(crate) struct TarWriter<W: Write>(tar::Builder<W>);

impl<W: Write> TarWriter<W> {
    pub(crate) fn new(out: W) -> Self {
        Self(tar::Builder::new(out))
    }

    fn entry(&mut self, path: &str, kind: tar::EntryType, mode: u32, size: u64, data: impl Read) -> io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(MTIME);
        header.set_size(size);
        self.0.append_data(&mut header, path, data)
    }

    fn dir(&mut self, path: &str) -> io::Result<()> {
        self.entry(path, tar::EntryType::Directory, 0o755, 0, io::empty())
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.entry(path, tar::EntryType::Regular, mode, data.len() as u64, data)
    }

    /// A regular file from `blob`, streamed when it is on disk.
    fn blob(&mut self, path: &str, mode: u32, blob: &Blob<'_>) -> io::Result<()> {
        match blob {
            Blob::File(t) => self.entry(path, tar::EntryType::Regular, mode, t.size, t.open()?),
            other => self.file(path, mode, other.bytes()),
        }
    }

    /// Writes the end-of-archive marker and returns the output.
    pub(crate) fn finish(self) -> io::Result<W> {
        self.0.into_inner()
    }
}

/// A writer that passes bytes through while hashing and counting them.
pub(crate) struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// The output, `sha256:<hex>` of everything written, and its length.
    pub(crate) fn finish(self) -> (W, String, u64) {
        (self.inner, format!("sha256:{:x}", self.hasher.finalize()), self.written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image whose first layer is in memory, and the same image with
    /// that layer read from a tar file on disk.
    fn in_memory_and_on_disk(dir: &Path) -> (TestImage, TestImage) {
        let base = Layer::new()
            .created_by("base")
            .file("etc/os-release", 0o644, "ID=test\n")
            .file("usr/bin/tool", 0o755, vec![7u8; 10_000]);
        let path = dir.join("base.tar");
        fs::write(&path, base.tar()).unwrap();
        let tar = TarFile::hash(&path).unwrap();
        assert_eq!(tar.diff_id, base.diff_id());
        assert_eq!(tar.size, base.tar().len() as u64);
        let mut on_disk = Layer::from_tar_file(tar);
        on_disk.created_by = Some("base".into());
        assert_eq!(on_disk.diff_id(), base.diff_id());
        let image = |layer: Layer| {
            TestImage::new("localhost/test/disk:1")
                .layer(layer)
                .layer(Layer::new().file("app/run", 0o755, "#!/bin/sh\n"))
                .cmd(&["/app/run"])
        };
        (image(base), image(on_disk))
    }

    #[test]
    fn a_layer_on_disk_gives_the_same_image_as_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let (memory, disk) = in_memory_and_on_disk(dir.path());
        let (m, d) = (memory.build(), disk.build());
        assert_eq!(d.layers.len(), 2);
        assert!(d.layers[0].is_empty());
        let added = TestImage::new("localhost/test/disk:3")
            .layer(disk.layers[0].clone())
            .file("x", 0o644, "x");
        assert_eq!(
            added.layers.len(),
            2,
            "a file after a tar-file layer starts a new layer"
        );
        assert!(d.layer_files[0].is_some() && d.layer_files[1].is_none());
        assert_eq!((&m.config, &m.manifest), (&d.config, &d.manifest));
        assert_eq!(m.image_id(), d.image_id());
        assert_eq!(m.diff_ids(), d.diff_ids());
        assert_eq!(m.content_size(), d.content_size());

        // docker archive: in memory, and streamed from disk.
        let expected = docker_archive(&memory);
        assert_eq!(docker_archive(&disk), expected);
        let path = dir.path().join("docker.tar");
        write_docker_archive(&disk, &path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), expected);

        // OCI layout: tar and directory, the shared layer once.
        let other = TestImage::new("localhost/test/disk:2").layer(disk.layers[0].clone());
        let memory_layout = OciLayout::new()
            .image(memory.clone())
            .image(TestImage::new("localhost/test/disk:2").layer(memory.layers[0].clone()))
            .digest_refs(true);
        let disk_layout = OciLayout::new().image(disk.clone()).image(other).digest_refs(true);
        let expected = memory_layout.tar();
        assert_eq!(disk_layout.tar(), expected);
        let path = dir.path().join("oci.tar");
        disk_layout.write_tar(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), expected);
        let out = dir.path().join("oci");
        disk_layout.write_dir(&out).unwrap();
        for (name, bytes) in memory_layout.files() {
            assert_eq!(fs::read(out.join(&name)).unwrap(), bytes, "{name}");
        }
    }

    #[test]
    fn a_changed_layer_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_, disk) = in_memory_and_on_disk(dir.path());
        fs::write(dir.path().join("base.tar"), b"shorter").unwrap();
        let err = write_docker_archive(&disk, &dir.path().join("docker.tar")).unwrap_err();
        assert!(err.to_string().contains("expected"), "{err}");
        assert!(!dir.path().join("docker.tar").exists());
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temp file left: {leftovers:?}");
    }
}
