// slowexec MOUNTPOINT BACKING SECONDS FLAG: a FUSE file system (raw
// /dev/fuse, no library) with one executable file, /f, holding BACKING's
// bytes. While the file FLAG exists, a READ at offset 4096 or more by a
// process other than mcpcaged is answered SECONDS later (on a thread of
// its own): an exec of /f whose pages are not cached is held inside the
// kernel's ELF loader, after the exec's point of no return, as long as
// the file system wants. Any user can mount such a file system over a
// program they own (fusermount); the identity tests use it to hold an
// exec between /proc showing the new program and the exec's end.
//
// It prints "slowexec: mounted" on stderr once the mount is made.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

static int fuse, backing, seconds;
static off_t size;
static const char *flag;

static void reply(uint64_t unique, int err, const void *data, size_t n)
{
	struct fuse_out_header h = {.len = sizeof h + n, .error = err, .unique = unique};
	char *buf = malloc(h.len);
	if (!buf)
		exit(1);
	memcpy(buf, &h, sizeof h);
	if (n)
		memcpy(buf + sizeof h, data, n);
	if (write(fuse, buf, h.len) < 0 && errno != ENOENT)
		perror("slowexec: write");
	free(buf);
}

static void attr(struct fuse_attr *a, uint64_t ino)
{
	memset(a, 0, sizeof *a);
	a->ino = ino;
	a->mode = ino == FUSE_ROOT_ID ? (S_IFDIR | 0755) : (S_IFREG | 0755);
	a->nlink = 1;
	a->size = ino == FUSE_ROOT_ID ? 0 : size;
	a->blocks = (size + 511) / 512;
	a->blksize = 4096;
}

struct read_req {
	uint64_t unique, off;
	uint32_t size;
	int hold;
};

static void *answer(void *p)
{
	struct read_req *r = p;
	if (r->hold) {
		fprintf(stderr, "slowexec: holding a read at %llu for %ds\n", (unsigned long long)r->off, seconds);
		sleep(seconds);
	}
	char *b = malloc(r->size);
	ssize_t n = b ? pread(backing, b, r->size, r->off) : -1;
	reply(r->unique, n < 0 ? -EIO : 0, b, n < 0 ? 0 : n);
	free(b);
	free(r);
	return 0;
}

// fromDaemon reports whether pid is mcpcaged (which hashes the file).
static int fromDaemon(uint32_t pid)
{
	char path[64], comm[32] = "";
	snprintf(path, sizeof path, "/proc/%u/comm", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	if (!fgets(comm, sizeof comm, f))
		comm[0] = 0;
	fclose(f);
	return strncmp(comm, "mcpcaged", 8) == 0;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: slowexec MOUNTPOINT BACKING SECONDS FLAG\n");
		return 2;
	}
	seconds = atoi(argv[3]);
	flag = argv[4];
	backing = open(argv[2], O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (backing < 0 || fstat(backing, &st) < 0) {
		perror("slowexec: backing file");
		return 1;
	}
	size = st.st_size;
	fuse = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	if (fuse < 0) {
		perror("slowexec: /dev/fuse");
		return 1;
	}
	char opts[128];
	snprintf(opts, sizeof opts, "fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other", fuse);
	if (mount("slowexec", argv[1], "fuse.slowexec", MS_NOSUID | MS_NODEV, opts) < 0) {
		perror("slowexec: mount");
		return 1;
	}
	fprintf(stderr, "slowexec: mounted\n");
	static char buf[(1 << 20) + 4096];
	for (;;) {
		ssize_t n = read(fuse, buf, sizeof buf);
		if (n < 0) {
			if (errno == EINTR || errno == ENOENT)
				continue;
			return errno == ENODEV ? 0 : 1; // ENODEV: unmounted
		}
		struct fuse_in_header *in = (void *)buf;
		void *arg = buf + sizeof *in;
		switch (in->opcode) {
		case FUSE_INIT: {
			struct fuse_init_in *ii = arg;
			struct fuse_init_out o = {0};
			o.major = FUSE_KERNEL_VERSION;
			o.minor = ii->minor < FUSE_KERNEL_MINOR_VERSION ? ii->minor : FUSE_KERNEL_MINOR_VERSION;
			o.max_write = 4096;
			o.max_background = 16;
			o.congestion_threshold = 12;
			o.time_gran = 1;
			o.max_pages = 32;
			reply(in->unique, 0, &o, sizeof o);
			break;
		}
		case FUSE_LOOKUP: {
			if (in->nodeid != FUSE_ROOT_ID || strcmp(arg, "f") != 0) {
				reply(in->unique, -ENOENT, 0, 0);
				break;
			}
			struct fuse_entry_out e = {0};
			e.nodeid = 2;
			e.generation = 1;
			e.entry_valid = 3600;
			e.attr_valid = 3600;
			attr(&e.attr, 2);
			reply(in->unique, 0, &e, sizeof e);
			break;
		}
		case FUSE_GETATTR: {
			struct fuse_attr_out a = {0};
			a.attr_valid = 3600;
			attr(&a.attr, in->nodeid);
			reply(in->unique, 0, &a, sizeof a);
			break;
		}
		case FUSE_OPEN:
		case FUSE_OPENDIR: {
			struct fuse_open_out o = {0};
			o.fh = 1;
			o.open_flags = FOPEN_KEEP_CACHE;
			reply(in->unique, 0, &o, sizeof o);
			break;
		}
		case FUSE_READ: {
			struct fuse_read_in *ri = arg;
			struct read_req *r = calloc(1, sizeof *r);
			if (!r)
				return 1;
			r->unique = in->unique;
			r->off = ri->offset;
			r->size = ri->size;
			r->hold = ri->offset >= 4096 && access(flag, F_OK) == 0 && !fromDaemon(in->pid);
			pthread_t t;
			if (pthread_create(&t, 0, answer, r) != 0)
				return 1;
			pthread_detach(t);
			break;
		}
		case FUSE_FLUSH:
		case FUSE_RELEASE:
		case FUSE_RELEASEDIR:
			reply(in->unique, 0, 0, 0);
			break;
		case FUSE_FORGET:
		case FUSE_BATCH_FORGET:
		case FUSE_INTERRUPT:
			break; // no answer
		case FUSE_DESTROY:
			reply(in->unique, 0, 0, 0);
			return 0;
		default:
			reply(in->unique, -ENOSYS, 0, 0);
		}
	}
}
