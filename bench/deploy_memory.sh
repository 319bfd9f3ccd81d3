#!/bin/bash
# Peak memory of a deployment moving a transfer-only model (issue 17):
# provisions a project of COORDS coordinators (3: a Raft cluster; 1: a
# single coordinator) and the named sites on this machine's loopback,
# starts each as its own process under /usr/bin/time -v, submits a FedAvg
# job of ROUNDS rounds (default 1) of a model of PARAMS float32s, and
# prints each process's peak RSS as a multiple of the model's bytes.
#
#   bash bench/deploy_memory.sh BIN PARAMS TAG [SITE...]
#   bash bench/deploy_memory.sh ./cohort 671088640 ha kit unibo inria charite epfl ethz   # 2.5 GiB, 6 sites
#
# It needs disk for the model about 3 times per coordinator (blobs) and
# once per site (its update), plus once per site on the leader (received
# updates): a 2.5 GiB model with 6 sites and 3 coordinators peaked near
# 40 GB. Work goes in ${OUT:-/tmp/cohort-mem}/TAG-PARAMS; MEMLIMIT sets
# memory_limit in coordinator.yaml, MAXMODEL its max_model_bytes (a 10 GiB
# model needs 20GiB or more), STRATEGY the arm's strategy (default fedavg);
# PORT (default 18443) the first port.
set -u
BIN=$(realpath "$1"); P=$2; TAG=$3; shift 3
SITES=("$@"); [ ${#SITES[@]} -eq 0 ] && SITES=(kit unibo inria)
COORDS=${COORDS:-3}; PORT=${PORT:-18443}
D=${OUT:-/tmp/cohort-mem}/$TAG-$P
rm -rf $D; mkdir -p $D/tmp; cd $D
export TMPDIR=$D/tmp # the sites' update files
{
echo "name: fl-study-ha"
echo "coordinators:"
for i in $(seq 1 $COORDS); do echo "  - {name: coord-$i, address: \"127.0.0.1:$((PORT + 10 * (i - 1)))\"}"; done
echo "sites:"
for s in "${SITES[@]}"; do echo "  - {name: $s}"; done
echo "admins:"
echo "  - {name: alice}"
echo "validity: 8760h"
} > project.yaml
$BIN provision -o kits project.yaml >/dev/null 2>&1 || { echo provision failed; exit 1; }
SL=$(IFS=,; echo "${SITES[*]}")
cat > job.yaml <<EOJ
name: mem-ha
seed: 1
data: {dataset: synthetic, test_fraction: 0, synthetic: {samples_per_site: 100}}
model: {kind: transfer, params: $P}
sites: {names: [$SL]}
rounds: ${ROUNDS:-1}
arms: [{name: arm, strategy: ${STRATEGY:-fedavg}}]
deadline: {round: 30m}
EOJ
TP=()
for i in $(seq 1 $COORDS); do
  [ -n "${MEMLIMIT:-}" ] && echo "memory_limit: $MEMLIMIT" >> kits/coordinators/coord-$i/coordinator.yaml
  [ -n "${MAXMODEL:-}" ] && echo "max_model_bytes: $MAXMODEL" >> kits/coordinators/coord-$i/coordinator.yaml
  /usr/bin/time -v -o coord-$i.time $BIN coordinator -c kits/coordinators/coord-$i/coordinator.yaml > coord-$i.log 2>&1 & TP+=($!)
done
sleep 4
for s in "${SITES[@]}"; do /usr/bin/time -v -o site-$s.time $BIN site -c kits/sites/$s/site.yaml > site-$s.log 2>&1 & TP+=($!); done
sleep 3
start=$(date +%s)
COHORT_ADMIN=kits/admins/alice/admin.yaml timeout 3000 $BIN submit --watch job.yaml > submit.log 2>&1
echo "submit rc=$? in $(( $(date +%s) - start )) s"
tail -3 submit.log
for t in "${TP[@]}"; do c=$(pgrep -P $t); [ -n "$c" ] && kill -INT $c; done
wait
for f in $(for i in $(seq 1 $COORDS); do echo coord-$i; done) $(for s in "${SITES[@]}"; do echo site-$s; done); do echo "$f $(grep 'Maximum resident' $f.time | awk '{print $6}') kB = $(grep 'Maximum resident' $f.time | awk -v p=$P '{printf "%.2f", $6*1024/(4*p)}')x"; done
[ -n "${KEEP:-}" ] || rm -rf $D/kits/coordinators/*/state $D/tmp
