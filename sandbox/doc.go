// Package sandbox turns an MCP server definition into an OCI runtime spec
// and runs it with containerd and runc.
//
// Host view: a server without an image runs on a read-only view of the
// host's root filesystem, assembled from a small skeleton directory (of
// which each container's root is a copy of its own, read-only, removed
// with the container) plus one read-only, nosuid, nodev bind mount
// per top-level host directory. Binds are not recursive: file systems
// mounted below a top-level directory (for instance /var/lib/containerd's
// snapshots) stay out of view. Top-level symlinks (bin -> usr/bin on merged
// /usr systems) are copied into the skeleton. /proc, /sys and /dev are the
// container's own; /home, /root, /tmp and /run are never taken from the
// host: /tmp and the user's home are fresh private tmpfs mounts, so the
// user's files, runtime sockets (containerd, mcpcaged) and temporary
// files are not visible. Nothing is mounted by the daemon itself: runc
// assembles the view inside the container's mount namespace, so a crash
// leaves no mounts behind.
//
// Lifecycle (see [Launcher]): create container, create task (the server's
// stdio are FIFOs read and written only by this process), the caller's
// hook runs with the task's pid before anything of the server executes,
// then the task starts. Stopping follows the MCP stdio transport's ladder:
// close stdin, wait, SIGTERM to every process of the container, wait,
// SIGKILL.
package sandbox
