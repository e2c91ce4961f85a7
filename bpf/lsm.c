//go:build ignore

// mcpcage's BPF-LSM program: deny_paths enforced when a file is opened.
// Where the kernel runs BPF LSM programs, an open whose kernel path has a
// denied component fails with EACCES before the task holds the file; the
// kill-on-open tracepoints stay as a second line. Built with bpf2go (see
// gen.go); the loader shares cage.c's maps with it.

#include "cage.h"

#define EACCES 13

SEC("lsm/file_open")
int BPF_PROG(cage_file_open, struct file *file, int ret)
{
	if (ret != 0 || !in_cage())
		return ret;
	__u64 cgid;
	struct session *s = current_session(&cgid);
	if (!s)
		return 0;
	struct dentry *d = BPF_CORE_READ(file, f_path.dentry);
	struct vfsmount *vm = BPF_CORE_READ(file, f_path.mnt);
	__u32 denied = walk_path(0, cgid, s->deny_lens, d, vm);
	if (!denied)
		return 0;
	struct event *e = new_event(cgid, EV_FILE_DENIED, false);
	if (e) {
		walk_path(e, cgid, s->deny_lens, d, vm);
		e->result = -EACCES;
		e->flags = BPF_CORE_READ(file, f_flags);
		e->rule = denied - 1;
		bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	}
	return -EACCES;
}
