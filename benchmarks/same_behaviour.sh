#!/bin/bash
# A seeded short run of every stage, to compare two trees bit for bit after a change that
# should not change behaviour (a refactoring):
#
#   git archive OLD_COMMIT | tar -x -C /tmp/old
#   benchmarks/same_behaviour.sh /tmp/old /tmp/before
#   benchmarks/same_behaviour.sh "$PWD" /tmp/after
#   python benchmarks/compare_outputs.py /tmp/before /tmp/after
#
# phantom (4 patients), patches, train (2 epochs), evaluate, scan (2 images), gradcheck and a
# one-epoch demo; the kernel variants pinned (default), one Numba thread.
set -e
TREE=$1; OUT=$2
export PYTHONPATH=$TREE SHALLOWCNN_KERNEL_VARIANT=default NUMBA_NUM_THREADS=1 MPLBACKEND=Agg
rm -rf "$OUT"; mkdir -p "$OUT"
cd "$OUT"
python -m shallowcnn phantom ph --cases 4 --seed 3 --size 640x800 --quiet > phantom.txt
python -m shallowcnn patches ph -o p.npz --seed 3 --per-cluster 3 --negatives-per-image 4 --no-figures --quiet \
    > patches.txt
python -m shallowcnn train p.npz -o run --epochs 2 --batch-size 16 --seed 1 --backend numba --quiet > train.txt
python -m shallowcnn evaluate run/model.npz p.npz -o ev > evaluate.txt 2>&1 || true
IMGS=$(ls ph/AllDICOMs/*.dcm | head -2)
python -m shallowcnn scan run/model.npz $IMGS -o sc --stride 16 --backend numba --quiet > scan.txt 2>&1 || true
python -m shallowcnn gradcheck --seed 2 --entries 10 > gradcheck.txt
python -m shallowcnn demo -o demo --cases 3 --epochs 1 --size 640x800 --seed 4 --backend numba --quiet > demo.txt 2>&1
