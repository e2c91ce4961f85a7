package bpf

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type event -type event_kind -type connect_outcome -type event_rule -type session_flag -type lost_counter cage cage.c -- -I./headers -O2 -g -Wall -Werror
//go:generate go tool bpf2go -tags linux -target amd64,arm64 cageDirect cage.c -- -I./headers -O2 -g -Wall -Werror -DDIRECT_READS
//go:generate go tool bpf2go -tags linux -target amd64,arm64 lsm lsm.c -- -I./headers -O2 -g -Wall -Werror
//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type listen_key -type net_denied_reason bind bind.c -- -I./headers -O2 -g -Wall -Werror
//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type exec_stamp -type stamp_meta_key -type env_state -type env_config stamp stamp.c -- -I./headers -O2 -g -Wall -Werror
