#!/usr/bin/env bash
# Pull DVC-tracked folders from the project's remote, or say in one line what to configure.
#
#   scripts/dvc-pull.sh                  results/ and data/ (what `make pull` does)
#   scripts/dvc-pull.sh results.dvc      the results alone (MBs)
#   scripts/dvc-pull.sh cache.dvc        ImageNet's caches and feature caches (about 200 GB for the paper)
#
# DVC's own message for an unreachable remote does not say what to do; this does,
# before any transfer starts.
set -euo pipefail
cd "$(dirname "$0")/.."

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(results.dvc data.dvc)
fi
shopt -s nullglob
pointers=(*.dvc)
for target in "${targets[@]}"; do
    if [ ! -f "$target" ]; then
        echo "dvc-pull: $target is not in this checkout (pointers here: ${pointers[*]:-none})" >&2
        exit 2
    fi
done

if ! command -v dvc >/dev/null; then
    echo "dvc-pull: dvc is not on PATH; run make setup (or activate .venv) first" >&2
    exit 2
fi
how="set it once for the team: dvc remote modify storage url /shared/path (or s3://..., ssh://...)"
how+=" and commit .dvc/config; README.md, 'Share data and results with DVC'"
remote=$(dvc config core.remote 2>/dev/null || true)  # `dvc remote default` prints "No default remote set" to stdout
if [ -z "$remote" ]; then
    echo "dvc-pull: no default DVC remote is configured; $how" >&2
    exit 2
fi
# `dvc config` gives the merged setting (config.local wins) as an absolute path; `dvc remote list`
# wraps long lines at 80 columns when not on a terminal, so it cannot be parsed.
url=$(dvc config "remote.$remote.url" 2>/dev/null || true)
if [ -z "$url" ]; then
    echo "dvc-pull: the DVC remote '$remote' has no url; $how" >&2
    exit 2
fi
case "$url" in
    *://*) ;;  # s3://, ssh://, gs://, ...: reachability is DVC's to find out
    *)
        if [ ! -d "$url" ]; then
            echo "dvc-pull: the DVC remote '$remote' is $url, which is not a folder on this machine; $how" >&2
            exit 2
        fi
        ;;
esac

if ! dvc pull "${targets[@]}"; then
    echo "dvc-pull: pulling ${targets[*]} from '$remote' ($url) failed (see above);" \
        "if the remote is unreachable from here, $how" >&2
    exit 2
fi
