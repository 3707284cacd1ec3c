#[test]
fn probe() {
    println!("exe {:?}", std::env::current_exe());
    println!("runtime CARGO {:?}", std::env::var("CARGO"));
    println!("compile CARGO {:?}", env!("CARGO"));
    let t = std::time::Instant::now();
    let out = std::process::Command::new(std::env::var("CARGO").unwrap()).args(["build", "-p", "natter-server", "--examples", "--message-format", "short"]).output().unwrap();
    println!("{:?} {:?} {}", t.elapsed(), out.status, String::from_utf8_lossy(&out.stderr));
}
