//! The `onewindow` command line.

fn main() {
    println!("onewindow");
}
