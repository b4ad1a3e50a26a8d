/* Field numbers of native/helper.proto, written out by hand for the C codec.
 * F_<Message>_<field> for fields, E_<Enum>_<VALUE> for enum values.
 * test/native-proto.test.ts parses both files and fails on any difference: change them together. */
#ifndef GODWIT_FIELDS_H
#define GODWIT_FIELDS_H

/* message Request */
#define F_Request_id 1
#define F_Request_seize 10
#define F_Request_detach 11
#define F_Request_kill 12
#define F_Request_thread_regs 13
#define F_Request_dump_process 14
#define F_Request_read_pages 15
#define F_Request_cancel 16
#define F_Request_peek_pipe 17
#define F_Request_peek_socket 18
#define F_Request_unix_diag 19
#define F_Request_sock_opts 20
#define F_Request_tty_queue 21
#define F_Request_inet_sock 40
#define F_Request_tcp_repair_on 41
#define F_Request_tcp_repair_dump 42
#define F_Request_tcp_repair_off 43
#define F_Request_track_start 30
#define F_Request_track_register 31
#define F_Request_track_scan 32
#define F_Request_track_stop 33
#define F_Request_present_pages 34
#define F_Request_fd_query 50

/* message Response */
#define F_Response_id 1
#define F_Response_error 2
#define F_Response_hello 9
#define F_Response_seize 10
#define F_Response_detach 11
#define F_Response_kill 12
#define F_Response_thread_regs 13
#define F_Response_dump_process 14
#define F_Response_read_pages 15
#define F_Response_peek_pipe 17
#define F_Response_peek_socket 18
#define F_Response_unix_diag 19
#define F_Response_sock_opts 20
#define F_Response_tty_queue 21
#define F_Response_inet_sock 40
#define F_Response_tcp_repair_on 41
#define F_Response_tcp_repair_dump 42
#define F_Response_tcp_repair_off 43
#define F_Response_track_start 30
#define F_Response_track_register 31
#define F_Response_track_scan 32
#define F_Response_track_stop 33
#define F_Response_present_pages 34
#define F_Response_fd_query 50

/* message Error */
#define F_Error_errnum 1
#define F_Error_syscall 2
#define F_Error_pid 3
#define F_Error_detail 4

/* message Hello */
#define F_Hello_version 1
#define F_Hello_pid 2
#define F_Hello_bulk_fd 3
#define F_Hello_bulk_pipe_size 4
#define F_Hello_page_size 5
#define F_Hello_xcr0 6
#define F_Hello_xsave_size 7
#define F_Hello_xsave_components 8

/* message XsaveComponent */
#define F_XsaveComponent_index 1
#define F_XsaveComponent_offset 2
#define F_XsaveComponent_size 3

/* message SeizeReq */
#define F_SeizeReq_tids 1
#define F_SeizeReq_suspend_seccomp 2
#define F_SeizeReq_timeout_ms 3

/* enum SeizeStatus */
#define E_SeizeStatus_SEIZE_UNKNOWN 0
#define E_SeizeStatus_STOPPED 1
#define E_SeizeStatus_GROUP_STOPPED 2
#define E_SeizeStatus_ZOMBIE 3
#define E_SeizeStatus_VANISHED 4
#define E_SeizeStatus_TIMEOUT 5
#define E_SeizeStatus_ALREADY_SEIZED 6

/* message SeizedThread */
#define F_SeizedThread_tid 1
#define F_SeizedThread_status 2
#define F_SeizedThread_tgid 3
#define F_SeizedThread_stop_signal 4
#define F_SeizedThread_seccomp_suspended 5
#define F_SeizedThread_delivered_signals 6

/* message SeizeResp */
#define F_SeizeResp_threads 1

/* message DetachReq */
#define F_DetachReq_tids 1

/* message DetachResp */
#define F_DetachResp_detached 1
#define F_DetachResp_gone 2

/* message KillReq */
#define F_KillReq_pids 1
#define F_KillReq_timeout_ms 2

/* message KillResp */
#define F_KillResp_reaped 1

/* message ThreadRegsReq */
#define F_ThreadRegsReq_tids 1

/* message ThreadRegsResp */
#define F_ThreadRegsResp_threads 1

/* enum RestartKind */
#define E_RestartKind_RESTART_NONE 0
#define E_RestartKind_RESTART_SYSCALL 1
#define E_RestartKind_RESTART_EINTR 2

/* message ThreadRegs */
#define F_ThreadRegs_tid 1
#define F_ThreadRegs_regs 2
#define F_ThreadRegs_regs_raw 3
#define F_ThreadRegs_restart 4
#define F_ThreadRegs_xsave 5
#define F_ThreadRegs_fpregs 6
#define F_ThreadRegs_sigmask 7
#define F_ThreadRegs_pending 8
#define F_ThreadRegs_rseq_abi_pointer 9
#define F_ThreadRegs_rseq_abi_size 10
#define F_ThreadRegs_rseq_signature 11
#define F_ThreadRegs_rseq_flags 12
#define F_ThreadRegs_robust_list 13
#define F_ThreadRegs_robust_list_len 14
#define F_ThreadRegs_syscall_op 15
#define F_ThreadRegs_syscall_nr 16
#define F_ThreadRegs_syscall_args 17
#define F_ThreadRegs_syscall_rval 18
#define F_ThreadRegs_tls 19
#define F_ThreadRegs_seccomp_filters 30
#define F_ThreadRegs_seccomp_flags 31

/* message DumpProcessReq */
#define F_DumpProcessReq_pid 1
#define F_DumpProcessReq_tids 2
#define F_DumpProcessReq_posix_timers 3

/* message SigAction */
#define F_SigAction_sig 1
#define F_SigAction_handler 2
#define F_SigAction_flags 3
#define F_SigAction_restorer 4
#define F_SigAction_mask 5

/* message Itimer */
#define F_Itimer_which 1
#define F_Itimer_interval_sec 2
#define F_Itimer_interval_usec 3
#define F_Itimer_value_sec 4
#define F_Itimer_value_usec 5

/* message PosixTimer */
#define F_PosixTimer_id 1
#define F_PosixTimer_interval_sec 2
#define F_PosixTimer_interval_nsec 3
#define F_PosixTimer_value_sec 4
#define F_PosixTimer_value_nsec 5
#define F_PosixTimer_overrun 6

/* message Rlimit */
#define F_Rlimit_resource 1
#define F_Rlimit_cur 2
#define F_Rlimit_max 3

/* message ThreadInjected */
#define F_ThreadInjected_tid 1
#define F_ThreadInjected_altstack_sp 2
#define F_ThreadInjected_altstack_flags 3
#define F_ThreadInjected_altstack_size 4
#define F_ThreadInjected_clear_tid_address 5
#define F_ThreadInjected_pdeathsig 6

/* message ProcessState */
#define F_ProcessState_pid 1
#define F_ProcessState_sigactions 2
#define F_ProcessState_itimers 3
#define F_ProcessState_posix_timers 4
#define F_ProcessState_dumpable 5
#define F_ProcessState_child_subreaper 6
#define F_ProcessState_shared_pending 7
#define F_ProcessState_rlimits 8
#define F_ProcessState_threads 9
#define F_ProcessState_injected_syscalls 10
#define F_ProcessState_elapsed_ns 11
#define F_ProcessState_membarrier_registrations 12

/* message ReadPagesReq */
#define F_ReadPagesReq_pid 1
#define F_ReadPagesReq_starts 2
#define F_ReadPagesReq_lengths 3

/* message ReadPagesResp */
#define F_ReadPagesResp_bytes 1
#define F_ReadPagesResp_via_proc_mem 2
#define F_ReadPagesResp_elapsed_ns 3

/* message CancelReq */
#define F_CancelReq_target 1

/* message PeekPipeReq */
#define F_PeekPipeReq_pid 1
#define F_PeekPipeReq_fd 2
#define F_PeekPipeReq_max_bytes 3

/* message PeekPipeResp */
#define F_PeekPipeResp_data 1
#define F_PeekPipeResp_pipe_size 2
#define F_PeekPipeResp_truncated 3

/* message TtyQueueReq / TtyQueueResp */
#define F_TtyQueueReq_pid 1
#define F_TtyQueueReq_fd 2
#define F_TtyQueueResp_slave_in 1
#define F_TtyQueueResp_master_in 2

/* message PeekSocketReq */
#define F_PeekSocketReq_pid 1
#define F_PeekSocketReq_fd 2
#define F_PeekSocketReq_max_bytes 3

/* message QueuedPacket */
#define F_QueuedPacket_data 1
#define F_QueuedPacket_addr 2
#define F_QueuedPacket_passed_fds 3

/* message PeekSocketResp */
#define F_PeekSocketResp_packets 1
#define F_PeekSocketResp_truncated 2

/* message UnixDiagReq */
#define F_UnixDiagReq_inodes 1
#define F_UnixDiagReq_netns_pid 2

/* message UnixSock */
#define F_UnixSock_inode 1
#define F_UnixSock_type 2
#define F_UnixSock_state 3
#define F_UnixSock_peer_inode 4
#define F_UnixSock_name 5
#define F_UnixSock_pending_connections 6
#define F_UnixSock_rqlen 7
#define F_UnixSock_wqlen 8
#define F_UnixSock_shutdown 9
#define F_UnixSock_vfs_dev 10
#define F_UnixSock_vfs_ino 11

/* message UnixDiagResp */
#define F_UnixDiagResp_sockets 1

/* message SockOptsReq */
#define F_SockOptsReq_pid 1
#define F_SockOptsReq_fd 2

/* message SockOptsResp */
#define F_SockOptsResp_domain 1
#define F_SockOptsResp_type 2
#define F_SockOptsResp_protocol 3
#define F_SockOptsResp_sndbuf 4
#define F_SockOptsResp_rcvbuf 5
#define F_SockOptsResp_snd_timeo_usec 6
#define F_SockOptsResp_rcv_timeo_usec 7
#define F_SockOptsResp_reuseaddr 8
#define F_SockOptsResp_reuseport 9
#define F_SockOptsResp_passcred 10
#define F_SockOptsResp_passsec 11
#define F_SockOptsResp_keepalive 12
#define F_SockOptsResp_broadcast 13
#define F_SockOptsResp_priority 14
#define F_SockOptsResp_mark 15
#define F_SockOptsResp_linger_onoff 16
#define F_SockOptsResp_linger 17
#define F_SockOptsResp_so_error_pending 18
#define F_SockOptsResp_peek_off 19
#define F_SockOptsResp_bound_name 20
#define F_SockOptsResp_peer_name 21
#define F_SockOptsResp_file_flags 23
#define F_SockOptsResp_rcvlowat 24
#define F_SockOptsResp_dontroute 25
#define F_SockOptsResp_no_check 26
#define F_SockOptsResp_oobinline 27

/* message InetSockReq */
#define F_InetSockReq_pid 1
#define F_InetSockReq_fd 2

/* message InetSockResp */
#define F_InetSockResp_state 1
#define F_InetSockResp_v6only 2
#define F_InetSockResp_backlog 3
#define F_InetSockResp_accept_queue 4
#define F_InetSockResp_nodelay 5
#define F_InetSockResp_cork 6
#define F_InetSockResp_keepcnt 7
#define F_InetSockResp_keepidle 8
#define F_InetSockResp_keepintvl 9
#define F_InetSockResp_freebind 10
#define F_InetSockResp_bound_dev 11

/* message TcpSock */
#define F_TcpSock_pid 1
#define F_TcpSock_fd 2

/* message TcpRepairOnReq */
#define F_TcpRepairOnReq_socks 1

/* message TcpRepairOnResp */
#define F_TcpRepairOnResp_count 1

/* message TcpRepairDumpReq */
#define F_TcpRepairDumpReq_pid 1
#define F_TcpRepairDumpReq_fd 2
#define F_TcpRepairDumpReq_max_bytes 3

/* message TcpRepairDumpResp */
#define F_TcpRepairDumpResp_snd_seq 1
#define F_TcpRepairDumpResp_rcv_seq 2
#define F_TcpRepairDumpResp_outq 3
#define F_TcpRepairDumpResp_unsent 4
#define F_TcpRepairDumpResp_inq 5
#define F_TcpRepairDumpResp_opt_mask 6
#define F_TcpRepairDumpResp_snd_wscale 7
#define F_TcpRepairDumpResp_rcv_wscale 8
#define F_TcpRepairDumpResp_mss_clamp 9
#define F_TcpRepairDumpResp_timestamp 10
#define F_TcpRepairDumpResp_has_window 11
#define F_TcpRepairDumpResp_snd_wl1 12
#define F_TcpRepairDumpResp_snd_wnd 13
#define F_TcpRepairDumpResp_max_window 14
#define F_TcpRepairDumpResp_rcv_wnd 15
#define F_TcpRepairDumpResp_rcv_wup 16

/* message TcpRepairOffReq */
#define F_TcpRepairOffReq_release 1

/* message TcpRepairOffResp */
#define F_TcpRepairOffResp_count 1
/* message FdQueryReq */
#define F_FdQueryReq_pid 1
#define F_FdQueryReq_fd 2
#define F_FdQueryReq_path 3
#define F_FdQueryReq_kind 4
#define F_FdQueryReq_cmd 5
#define F_FdQueryReq_arg 6
#define F_FdQueryReq_arg_len 7

/* message FdQueryResp */
#define F_FdQueryResp_result 1
#define F_FdQueryResp_data 2

/* message TrackStartReq */
#define F_TrackStartReq_pid 1
#define F_TrackStartReq_tid 2

/* message TrackStartResp */
#define F_TrackStartResp_target_fd 1
#define F_TrackStartResp_features 2
#define F_TrackStartResp_elapsed_ns 3

/* message TrackRegisterReq */
#define F_TrackRegisterReq_pid 1
#define F_TrackRegisterReq_starts 2
#define F_TrackRegisterReq_lengths 3

/* message TrackRegisterResp */
#define F_TrackRegisterResp_errnos 1
#define F_TrackRegisterResp_elapsed_ns 2

/* message TrackScanReq */
#define F_TrackScanReq_pid 1
#define F_TrackScanReq_starts 2
#define F_TrackScanReq_lengths 3
#define F_TrackScanReq_reset 4

/* message TrackScanResp */
#define F_TrackScanResp_regions 1
#define F_TrackScanResp_pages 2
#define F_TrackScanResp_elapsed_ns 3
#define F_TrackScanResp_failed 4

/* message TrackStopReq */
#define F_TrackStopReq_pid 1

/* message TrackStopResp */
#define F_TrackStopResp_stopped 1

/* message PresentPagesReq */
#define F_PresentPagesReq_pid 1
#define F_PresentPagesReq_starts 2
#define F_PresentPagesReq_lengths 3
#define F_PresentPagesReq_keep_file 4
#define F_PresentPagesReq_guards 5

/* message PresentPagesResp */
#define F_PresentPagesResp_regions 1
#define F_PresentPagesResp_pages 2
#define F_PresentPagesResp_elapsed_ns 3

#endif
