#!/usr/bin/env bash
# End-to-end test of scour on a real kind cluster: the chart, the image from
# deploy/Dockerfile, a manual ImageList run, and a user exclusion list.
#
# NOT RUN IN CI. The project's CI machines have no Docker, no kind and no
# network beyond package registries; run this by hand on a machine that has
# docker, kind, kubectl and helm (3.x) on PATH and can pull from Docker Hub:
#
#   tests/e2e-kind.sh                 # build, install, test, delete the cluster
#   KEEP_CLUSTER=1 tests/e2e-kind.sh  # leave the cluster up afterwards
#   SKIP_BUILD=1 IMAGE=scour-e2e/scour:dev tests/e2e-kind.sh   # reuse a built image
#
# What it checks:
#   1. the chart installs (with enabled=false: only manual runs) and the
#      controller becomes ready;
#   2. the seed ImageList (docker.io/library/alpine:3.7.3), applied verbatim,
#      completes: its status gets a timestamp, and the image is gone from
#      every node;
#   3. an image named in a user exclusion ConfigMap (created and labelled with
#      Eraser's commands) survives a run whose ImageList names it, while
#      alpine is removed again in the same run.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CLUSTER="${CLUSTER:-scour-e2e}"
IMAGE="${IMAGE:-scour-e2e/scour:dev}"
NAMESPACE=kube-system
VICTIM=docker.io/library/alpine:3.7.3
KEPT=docker.io/library/busybox:1.36.1
WAIT_INSTALL=300   # seconds for the controller to become ready
WAIT_RUN=900       # seconds for one ImageList run to complete

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ok() { printf '\033[32mok\033[0m   %s\n' "$*"; }
fail() { printf '\033[31mFAIL\033[0m %s\n' "$*" >&2; exit 1; }

# wait_for SECONDS DESCRIPTION COMMAND...: retries COMMAND every 5 s.
wait_for() {
    local timeout=$1 what=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            fail "timed out after ${timeout}s waiting for: $what"
        fi
        sleep 5
    done
    ok "$what"
}

for tool in docker kind kubectl helm; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is not on PATH (this script needs docker, kind, kubectl and helm)"
done

diagnostics() {
    step "diagnostics"
    kubectl get nodes -o wide || true
    kubectl -n "$NAMESPACE" get pods -o wide -l app.kubernetes.io/name=scour || true
    kubectl -n "$NAMESPACE" logs deploy/scour-controller --tail=200 || true
    kubectl get imagelist imagelist -o yaml || true
    kubectl get imagejobs -o yaml || true
    kubectl -n "$NAMESPACE" get pods -o wide || true
}

cleanup() {
    local rc=$?
    if ((rc != 0)); then diagnostics; fi
    rm -f "${SAMPLE:-}"
    if [ "${KEEP_CLUSTER:-0}" = 1 ]; then
        step "keeping cluster $CLUSTER (kind delete cluster --name $CLUSTER)"
    else
        step "deleting cluster $CLUSTER"
        kind delete cluster --name "$CLUSTER" || true
    fi
    if ((rc == 0)); then printf '\n\033[1;32mPASSED\033[0m\n'; else printf '\n\033[1;31mFAILED (exit %d)\033[0m\n' "$rc"; fi
}

step "creating kind cluster $CLUSTER (1 control plane, 2 workers)"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    fail "a kind cluster named $CLUSTER exists already; delete it or set CLUSTER"
fi
trap cleanup EXIT
kind create cluster --name "$CLUSTER" --wait 180s --config - <<'EOF'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
  - role: worker
  - role: worker
EOF
kubectl config use-context "kind-$CLUSTER" >/dev/null
mapfile -t NODES < <(kind get nodes --name "$CLUSTER")
mapfile -t WORKERS < <(printf '%s\n' "${NODES[@]}" | grep -- '-worker')
((${#WORKERS[@]} == 2)) || fail "expected 2 worker nodes, got: ${WORKERS[*]}"
ok "nodes: ${NODES[*]}"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    step "building $IMAGE from deploy/Dockerfile"
    docker build -f "$ROOT/deploy/Dockerfile" -t "$IMAGE" "$ROOT"
fi
step "loading $IMAGE into the cluster"
kind load docker-image "$IMAGE" --name "$CLUSTER"

step "installing the chart (enabled=false: manual runs only)"
helm install scour "$ROOT/deploy/helm/scour" \
    --set namespace="$NAMESPACE" \
    --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" --set image.pullPolicy=IfNotPresent \
    --set enabled=false --set intervalHours=24 \
    --wait --timeout "${WAIT_INSTALL}s"
kubectl -n "$NAMESPACE" rollout status deploy/scour-controller --timeout="${WAIT_INSTALL}s"
wait_for 60 "the CRDs are established" \
    kubectl wait --for condition=established --timeout=5s crd/imagelists.eraser.sh crd/imagejobs.eraser.sh
kubectl get -n kube-system configmap eraser-system-exclusion -o yaml | grep -q 'registry.k8s.io/pause:\*' \
    || fail "the system exclusion list does not protect the pause image"
ok "eraser-system-exclusion protects the pause image"
kubectl describe configmap -n kube-system eraser-manager-config | grep tag -C 3 | grep -q "${IMAGE##*:}" \
    || fail "eraser-manager-config does not show the image tag"
ok "eraser-manager-config shows tag ${IMAGE##*:}"

has_image() { docker exec "$1" crictl inspecti "$2" >/dev/null 2>&1; }
pull_everywhere() {
    local image=$1 node
    for node in "${NODES[@]}"; do
        docker exec "$node" crictl pull "$image" >/dev/null
        has_image "$node" "$image" || fail "$image did not arrive on $node"
    done
    ok "pulled $image onto ${#NODES[@]} nodes"
}
assert_gone() {
    local image=$1 node
    for node in "${WORKERS[@]}"; do
        if has_image "$node" "$image"; then fail "$image is still on $node"; fi
    done
    ok "$image is gone from every worker node"
}
assert_present() {
    local image=$1 node
    for node in "${WORKERS[@]}"; do
        has_image "$node" "$image" || fail "$image was removed from $node"
    done
    ok "$image is still on every worker node"
}
status() { kubectl get imagelist imagelist -o jsonpath="{.status.$1}" 2>/dev/null; }
timestamp_is_not() { local t; t="$(status timestamp)"; [ -n "$t" ] && [ "$t" != "$1" ]; }
job_completed() {
    local job
    job="$(status job)"
    [ -n "$job" ] && [ "$(kubectl get imagejob "$job" -o jsonpath='{.status.phase}')" = Completed ]
}

step "run 1: the seed ImageList removes $VICTIM"
pull_everywhere "$VICTIM"
kubectl apply -f - <<EOF
apiVersion: eraser.sh/v1
kind: ImageList
metadata:
  name: imagelist
spec:
  images:
    - docker.io/library/alpine:3.7.3
EOF
wait_for "$WAIT_RUN" "the ImageList status has a timestamp" timestamp_is_not ""
wait_for 60 "the run's ImageJob is Completed" job_completed
FIRST="$(status timestamp)"
kubectl get imagelist imagelist
kubectl get imagejobs
[ "$(status failed)" = 0 ] || fail "status.failed is $(status failed)"
[ "$(status success)" -ge 2 ] || fail "status.success is $(status success), expected at least the 2 workers"
assert_gone "$VICTIM"

step "run 2: an image in a user exclusion list survives"
SAMPLE="$(mktemp -d)/sample.json"
printf '{"excluded": ["%s"]}\n' "$KEPT" >"$SAMPLE"
(cd "$(dirname "$SAMPLE")" && kubectl create configmap excluded --from-file=sample.json --namespace=kube-system)
kubectl label configmap excluded eraser.sh/exclude.list=true -n kube-system
pull_everywhere "$VICTIM"
pull_everywhere "$KEPT"
kubectl patch imagelist imagelist --type merge -p "{\"spec\":{\"images\":[\"$VICTIM\",\"$KEPT\"]}}"
wait_for "$WAIT_RUN" "the changed ImageList ran again" timestamp_is_not "$FIRST"
wait_for 60 "the run's ImageJob is Completed" job_completed
kubectl get imagejob "$(status job)" -o yaml
assert_gone "$VICTIM"
assert_present "$KEPT"
