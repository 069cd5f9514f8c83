use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tiffany_scheduler::*;

struct Flag(Arc<AtomicBool>);
impl Drop for Flag { fn drop(&mut self) { self.0.store(true, Ordering::SeqCst); } }

#[test]
fn cancel_runs_destructor_and_panic_isolated() {
    let s = Scheduler::builder().virtual_clock().build().unwrap();
    let log = EventLog::new(); s.subscribe(log.clone());
    let dropped = Arc::new(AtomicBool::new(false));
    let d2 = dropped.clone();
    let child = s.spawn(move |cx| { let _f = Flag(d2); cx.sleep(Duration::from_secs(10)); 1 }).unwrap();
    let bad = s.spawn(|_cx| -> i32 { panic!("boom") }).unwrap();
    let parent = s.spawn(move |cx| {
        cx.yield_now();
        assert!(cx.cancel(child));
        let r = cx.join(child);
        assert!(matches!(r, JoinResult::Cancelled), "{r:?}");
        match cx.join(bad) { JoinResult::Failed(e) => assert_eq!(e.message(), "boom"), o => panic!("{o:?}") }
        7
    }).unwrap();
    let order = s.run();
    assert!(dropped.load(Ordering::SeqCst));
    eprintln!("{}", log.to_pal());
    assert_eq!(s.state(child), Some(TaskState::Cancelled));
    assert_eq!(s.state(bad), Some(TaskState::Failed));
    assert_eq!(s.value(parent).unwrap().downcast_ref::<i32>(), Some(&7));
    assert_eq!(order.len(), 3);
    assert!(s.now() < Duration::from_secs(10));
}

#[test]
fn pipe_io() {
    let s = Scheduler::new();
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc_pipe(fds.as_mut_ptr()) }, 0);
    let (r, w) = (fds[0], fds[1]);
    struct Fd(i32);
    impl IoSource for Fd { fn raw_fd(&self) -> i32 { self.0 } }
    let tok = s.register_io(&Fd(r)).unwrap();
    let reader = s.spawn(move |cx| {
        let ready = cx.io_wait(tok, Interest::Readable).unwrap();
        assert_eq!(ready, IoReady::Ready);
        let mut buf = [0u8; 16];
        let n = unsafe { libc_read(r, buf.as_mut_ptr(), 16) };
        n as usize
    }).unwrap();
    let h = s.handle();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        let n = unsafe { libc_write(w, b"hello".as_ptr(), 5) };
        assert_eq!(n, 5);
        #[cfg(not(feature = "async-io"))]
        h.notify_io(tok, Interest::Readable).unwrap();
        drop(h);
    });
    s.run();
    t.join().unwrap();
    assert_eq!(s.value(reader).unwrap().downcast_ref::<usize>(), Some(&5));
}

unsafe extern "C" {
    #[link_name = "pipe"] fn libc_pipe(fds: *mut i32) -> i32;
    #[link_name = "read"] fn libc_read(fd: i32, buf: *mut u8, n: usize) -> isize;
    #[link_name = "write"] fn libc_write(fd: i32, buf: *const u8, n: usize) -> isize;
}
