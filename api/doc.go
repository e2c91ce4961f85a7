// Package api is the protocol spoken on mcpcaged's unix socket, by the
// shim (`mcpcage run`) and by every other CLI command. The daemon learns
// who is calling from the socket's peer credentials, never from the
// messages.
//
// A connection is a sequence of frames: one type byte, a big-endian uint32
// payload length, then the payload (at most [MaxFrame] bytes). The client
// opens with a [FrameRequest] holding a JSON [Request]; the daemon answers
// with a [FrameReply] holding a JSON [Reply]. For op "run" with an OK reply
// the connection then carries the session:
//
//	client -> daemon  FrameStdin (bytes for the server), FrameStdinEOF
//	daemon -> client  FrameStdout, FrameStderr, then FrameExit (JSON [Exit])
//
// Stdout and stdin payloads are raw stream bytes: frame boundaries carry
// no meaning, the daemon does its own JSON-RPC framing.
package api
