package bpf

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type event cage cage.c -- -I./headers -O2 -g -Wall -Werror
//go:generate go tool bpf2go -tags linux -target amd64,arm64 lsm lsm.c -- -I./headers -O2 -g -Wall -Werror
//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type listen_key bind bind.c -- -I./headers -O2 -g -Wall -Werror
//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type exec_stamp stamp stamp.c -- -I./headers -O2 -g -Wall -Werror
