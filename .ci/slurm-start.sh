#!/bin/bash
# A one-node Slurm cluster on localhost (no systemd), for the real `sbatch` tests (tests/pipeline/sweep/test_slurm.py,
# test_agent_sbatch.py: a wandb agent job preempted, requeued and resumed).
# Run as root. The recipe is the team's tested one (shared/notes/slurm.md). .ci/run calls it.
set -euo pipefail

# --- munge ---
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --keyfile=/etc/munge/munge.key     # normally done by the munge postinst
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge          # /run is empty after boot
install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged                 # forks; pid in /run/munge/munged.pid
fi
munge -n | unmunge >/dev/null                          # fails here if munged does not answer

# --- slurm.conf ---
CPUS=$(nproc)
MEM=$(( $(free -m | awk '/^Mem:/{print $2}') - 1024 ))  # a bit below the real total
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=ci
SlurmctldHost=localhost
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=4
MailProg=/bin/true
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=localhost CPUs=${CPUS} RealMemory=${MEM} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
install -d -o slurm -g slurm -m 0755 /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm

# --- daemons ---
/usr/sbin/slurmctld -c          # -c: drop jobs/node state left by an earlier run; forks, runs as SlurmUser
/usr/sbin/slurmd -N localhost   # forks, stays root

state=
for _ in $(seq 1 60); do        # wait up to 30 s for the node to become idle
  state=$(sinfo -h -N -n localhost -o %T 2>/dev/null || true)
  [ "$state" = idle ] && break
  sleep 0.5
done
sinfo
if [ "$state" != idle ]; then
  echo "node not idle: '$state'"
  tail -n 30 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log
  exit 1
fi
