//! Tests of the private-containerd fixture against a real containerd 1.6
//! (skipped with a loud line unless root with containerd/ctr/runc; failing
//! instead when `CI` is set).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use scour::cri::{CriClient, CriImage};
use scour_testkit::containerd::{
    CRI_NAMESPACE, Footprint, PrivateContainerd, SANDBOX_IMAGE, require_containerd, shim_socket_path,
};
use scour_testkit::images::{self, TestImage, alpine_like, pause_image, plain, static_pause_binary};

fn start() -> PrivateContainerd {
    let started = Instant::now();
    let ctd = PrivateContainerd::start().unwrap_or_else(|e| panic!("starting a private containerd: {e}"));
    eprintln!(
        "containerd in {} ready after {:?}",
        ctd.dir().display(),
        started.elapsed()
    );
    ctd
}

/// Drops the fixture and asserts that nothing of it is left.
fn drop_and_assert_clean(ctd: PrivateContainerd) -> Footprint {
    let footprint = ctd.footprint();
    let started = Instant::now();
    drop(ctd);
    eprintln!("teardown of {} took {:?}", footprint.dir.display(), started.elapsed());
    assert_eq!(
        footprint.leftovers(),
        Vec::<String>::new(),
        "left behind by {footprint:#?}"
    );
    assert!(!footprint.dir.exists());
    footprint
}

async fn client(ctd: &PrivateContainerd) -> CriClient {
    ctd.cri_client()
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", ctd.endpoint()))
}

fn find<'a>(images: &'a [CriImage], id: &str) -> &'a CriImage {
    images
        .iter()
        .find(|i| i.id == id)
        .unwrap_or_else(|| panic!("image {id} not in ListImages: {images:#?}"))
}

fn set(items: &[String]) -> BTreeSet<&str> {
    items.iter().map(String::as_str).collect()
}

/// An image whose entrypoint `/pause` keeps running, distinct from the
/// sandbox image by a label.
fn runner(tag: &str) -> TestImage {
    pause_image(tag, &static_pause_binary()).label("scour.test/role", tag)
}

#[test]
fn start_then_drop_leaves_nothing_behind() {
    if !require_containerd() {
        return;
    }
    let ctd = start();
    assert!(ctd.socket().exists());
    assert_eq!(ctd.endpoint(), format!("unix://{}", ctd.socket().display()));
    let live = ctd.leftovers();
    assert!(
        live.iter().any(|l| l.starts_with(&format!("process {}", ctd.pid()))),
        "the live instance's containerd is not detected: {live:#?}"
    );
    assert!(live.iter().any(|l| l.starts_with("mount ")), "{live:#?}");
    drop_and_assert_clean(ctd);
}

#[tokio::test]
async fn imported_images_show_up_in_cri_with_ids_tags_and_digests() {
    if !require_containerd() {
        return;
    }
    let ctd = start();

    // A docker archive of a two-tag image.
    let docker = plain("localhost/test/dockerfmt:1").tag("localhost/test/dockerfmt:latest");
    let started = Instant::now();
    let docker_built = ctd.import_docker_archive(&docker).unwrap();
    eprintln!("docker-archive import took {:?}", started.elapsed());

    // An OCI bundle with digest refs: three images, one with two tags.
    let alpine = alpine_like("docker.io/test/alpine:3.11", "3.11.5", &[]);
    let multi = plain("localhost/test/multi:v1").tag("localhost/test/multi:latest");
    let app = runner("localhost/test/app:1");
    let started = Instant::now();
    let bundle = ctd.import_images([alpine.clone(), multi.clone(), app.clone()]).unwrap();
    eprintln!("3-image bundle import took {:?}", started.elapsed());

    let images = client(&ctd).await.list_images().await.unwrap();
    assert_eq!(images.len(), 5, "pause + dockerfmt + 3 bundle images: {images:#?}");

    let pause = find(&images, &pause_image(SANDBOX_IMAGE, &static_pause_binary()).image_id());
    assert_eq!(pause.tags, [SANDBOX_IMAGE]);

    let d = find(&images, &docker.image_id());
    assert_eq!(d.id, docker_built.image_id());
    assert_eq!(
        set(&d.tags),
        BTreeSet::from(["localhost/test/dockerfmt:1", "localhost/test/dockerfmt:latest"])
    );
    assert!(d.digests.is_empty(), "docker archives yield no repoDigests: {d:#?}");

    for (image, built) in [&alpine, &multi, &app].into_iter().zip(&bundle) {
        let listed = find(&images, &image.image_id());
        assert_eq!(set(&listed.tags), set(image.refs()), "{listed:#?}");
        assert_eq!(set(&listed.digests), set(&built.digest_refs()), "{listed:#?}");
        assert_eq!(listed.size, built.content_size(), "{listed:#?}");
        assert!(!listed.pinned);
    }
    let m = find(&images, &multi.image_id());
    assert_eq!(m.tags.len(), 2, "a two-tag image lists both tags: {m:#?}");
    assert_eq!(m.digests, [format!("localhost/test/multi@{}", multi.manifest_digest())]);

    drop_and_assert_clean(ctd);
}

#[tokio::test]
async fn running_and_created_containers_are_listed_and_torn_down() {
    if !require_containerd() {
        return;
    }
    let ctd = start();
    let run_image = runner("localhost/test/runner:1");
    let idle_image = plain("localhost/test/idle:1");
    ctd.import_images([run_image.clone(), idle_image.clone()]).unwrap();

    let started = Instant::now();
    let pod = ctd.run_pod("web").await.unwrap();
    eprintln!("RunPodSandbox took {:?}", started.elapsed());
    let started = Instant::now();
    let running = ctd
        .create_container(&pod, "localhost/test/runner:1", "runner", true)
        .await
        .unwrap();
    eprintln!("create + start took {:?}", started.elapsed());
    let created = ctd
        .create_container(&pod, &idle_image.image_id(), "idle", false)
        .await
        .unwrap();

    let containers = client(&ctd).await.list_containers().await.unwrap();
    assert_eq!(containers.len(), 2, "sandboxes are not containers: {containers:#?}");
    let by_id = |id: &str| {
        containers
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("{id} not listed: {containers:#?}"))
    };
    let r = by_id(&running);
    assert_eq!(r.state, "CONTAINER_RUNNING");
    assert_eq!(r.image_ref, run_image.image_id());
    assert_eq!(r.image, "localhost/test/runner:1");
    assert_eq!(r.name, "runner");
    let c = by_id(&created);
    assert_eq!(c.state, "CONTAINER_CREATED");
    assert_eq!(c.image_ref, idle_image.image_id());

    // The live instance has a shim, mounts and a cgroup for the running
    // container; the teardown must remove all of them.
    let live = ctd.leftovers();
    assert!(live.iter().any(|l| l.contains("containerd-shim")), "{live:#?}");
    assert!(
        live.iter().any(|l| l.starts_with("mount ") && l.contains("overlay")),
        "{live:#?}"
    );
    assert!(
        live.iter().any(|l| l.starts_with("cgroup ") && l.ends_with(&running)),
        "{live:#?}"
    );
    assert!(live.iter().any(|l| l.starts_with("shim socket ")), "{live:#?}");
    // The shim socket of the pod (whose shim also serves its containers) is
    // where the fixture predicts it.
    let task_dir = ctd.dir().join("state/io.containerd.runtime.v2.task/k8s.io");
    let address = std::fs::read_to_string(task_dir.join(&running).join("address")).unwrap();
    let predicted = shim_socket_path(&ctd.socket(), CRI_NAMESPACE, &pod.id);
    assert_eq!(address.trim(), format!("unix://{}", predicted.display()));

    // Start, stop and remove work too.
    let extra = ctd
        .create_container(&pod, "localhost/test/runner:1", "extra", false)
        .await
        .unwrap();
    ctd.start_container(&extra).await.unwrap();
    ctd.stop_container(&extra).await.unwrap();
    ctd.remove_container(&extra).await.unwrap();
    let ids: Vec<String> = client(&ctd)
        .await
        .list_containers()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert!(!ids.contains(&extra), "{ids:?}");

    let footprint = drop_and_assert_clean(ctd);
    assert!(footprint.ids.iter().any(|(_, id)| *id == pod.id));
    assert!(footprint.ids.iter().any(|(_, id)| *id == running));
}

#[tokio::test]
async fn teardown_after_containerd_was_killed_leaves_nothing_behind() {
    if !require_containerd() {
        return;
    }
    let mut ctd = start();
    ctd.import_images([runner("localhost/test/runner:1"), plain("localhost/test/idle:1")])
        .unwrap();
    let pod = ctd.run_pod("crashy").await.unwrap();
    let running = ctd
        .create_container(&pod, "localhost/test/runner:1", "runner", true)
        .await
        .unwrap();
    ctd.create_container(&pod, "localhost/test/idle:1", "idle", false)
        .await
        .unwrap();
    let footprint = ctd.footprint();

    ctd.kill_containerd();
    assert!(!ctd.is_running());
    assert!(
        CriClient::connect(&ctd.endpoint(), Duration::from_secs(1), Duration::from_secs(1))
            .await
            .is_err()
    );
    // Shim and container outlive containerd.
    let live = footprint.leftovers();
    assert!(live.iter().any(|l| l.contains("containerd-shim")), "{live:#?}");
    assert!(
        live.iter().any(|l| l.starts_with("cgroup ") && l.ends_with(&running)),
        "{live:#?}"
    );
    assert!(
        !live.iter().any(|l| l.starts_with(&format!("process {} ", ctd.pid()))),
        "{live:#?}"
    );

    drop_and_assert_clean(ctd);
    assert_eq!(footprint.leftovers(), Vec::<String>::new());
}

#[tokio::test]
async fn two_instances_work_independently() {
    if !require_containerd() {
        return;
    }
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(start);
        let b = s.spawn(start);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a.dir(), b.dir());
    let only_a = plain("localhost/test/only-a:1");
    let only_b = plain("localhost/test/only-b:1");
    a.import_images([only_a.clone(), runner("localhost/test/runner:1")])
        .unwrap();
    b.import_images([only_b.clone(), runner("localhost/test/runner:1")])
        .unwrap();

    // Same pod and container names in both.
    let pod_a = a.run_pod("same").await.unwrap();
    let pod_b = b.run_pod("same").await.unwrap();
    let ca = a
        .create_container(&pod_a, "localhost/test/runner:1", "c", true)
        .await
        .unwrap();
    let cb = b
        .create_container(&pod_b, "localhost/test/runner:1", "c", true)
        .await
        .unwrap();

    let (cri_a, cri_b) = (client(&a).await, client(&b).await);
    let ids = |images: Vec<CriImage>| images.into_iter().map(|i| i.id).collect::<BTreeSet<_>>();
    let images_a = ids(cri_a.list_images().await.unwrap());
    let images_b = ids(cri_b.list_images().await.unwrap());
    assert!(images_a.contains(&only_a.image_id()) && !images_a.contains(&only_b.image_id()));
    assert!(images_b.contains(&only_b.image_id()) && !images_b.contains(&only_a.image_id()));
    let containers = |list: Vec<scour::cri::CriContainer>| list.into_iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(containers(cri_a.list_containers().await.unwrap()), [ca.as_str()]);
    assert_eq!(containers(cri_b.list_containers().await.unwrap()), [cb.as_str()]);

    // Removing a pod removes its containers.
    a.remove_pod(&pod_a).await.unwrap();
    assert!(cri_a.list_containers().await.unwrap().is_empty());

    // Tearing one down does not disturb the other.
    drop(cri_a);
    drop_and_assert_clean(a);
    assert_eq!(containers(cri_b.list_containers().await.unwrap()), [cb.as_str()]);
    let live = b.leftovers();
    assert!(
        live.iter().any(|l| l.starts_with("cgroup ") && l.ends_with(&cb)),
        "{live:#?}"
    );
    drop(cri_b);
    drop_and_assert_clean(b);
}

#[test]
fn teardown_runs_when_a_test_panics() {
    if !require_containerd() {
        return;
    }
    let mut footprint = None;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ctd = start();
        ctd.import_images([runner("localhost/test/runner:1")]).unwrap();
        let pod = scour_testkit::containerd::block_on(ctd.run_pod("doomed")).unwrap();
        scour_testkit::containerd::block_on(ctd.create_container(&pod, "localhost/test/runner:1", "c", true)).unwrap();
        footprint = Some(ctd.footprint());
        panic!("deliberate panic with a running container");
    }));
    assert!(outcome.is_err());
    let footprint = footprint.expect("the closure got as far as the panic");
    assert_eq!(footprint.leftovers(), Vec::<String>::new());
}

#[test]
fn sync_api_and_images_module_agree_on_ids() {
    if !require_containerd() {
        return;
    }
    // The image writer and the fixture agree without tokio in the test.
    let ctd = start();
    let image = images::plain("localhost/test/sync:1");
    let built = ctd.import_images([image.clone()]).unwrap();
    let listed =
        scour_testkit::containerd::block_on(async { ctd.cri_client().await.unwrap().list_images().await.unwrap() });
    assert!(listed.iter().any(|i| i.id == built[0].image_id()));
    drop_and_assert_clean(ctd);
}
