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
for target in "${targets[@]}"; do
    if [ ! -f "$target" ]; then
        echo "dvc-pull: $target is not in this checkout (pointers here: $(ls ./*.dvc 2>/dev/null | xargs -n1 basename | tr '\n' ' '))" >&2
        exit 2
    fi
done

how="set it once for the team: dvc remote modify storage url /shared/path (or s3://..., ssh://...) and commit .dvc/config; README.md, 'Share data and results with DVC'"
remote=$(dvc remote default 2>/dev/null || true)
if [ -z "$remote" ]; then
    echo "dvc-pull: no default DVC remote is configured; $how" >&2
    exit 2
fi
url=$(dvc remote list | awk -v name="$remote" '$1 == name {print $2}')
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
    echo "dvc-pull: pulling ${targets[*]} from '$remote' ($url) failed (see above); if the remote is unreachable from here, $how" >&2
    exit 2
fi
