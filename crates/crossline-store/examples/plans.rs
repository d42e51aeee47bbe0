//! Print the bundled SQLite's query plan of every statement the backend runs by key, so a plan
//! that scans a workspace shows up: `cargo run -p crossline-store --example plans`.

fn main() {
    let mut conn = rusqlite::Connection::open_in_memory().expect("in-memory database");
    crossline_store::sqlite::migrate(&mut conn).expect("migrations apply");
    println!("SQLite {}", rusqlite::version());
    let mut scans = 0;
    for query in crossline_store::sqlite::KEYED_STATEMENTS {
        let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {query}")).expect("statement prepares");
        let count = statement.parameter_count();
        let params: Vec<String> = (0..count).map(|index| format!("p{index}")).collect();
        let plan: Vec<String> = statement
            .query_map(rusqlite::params_from_iter(params.iter()), |row| row.get::<_, String>(3))
            .expect("plan")
            .map(|row| row.expect("plan row"))
            .collect();
        let scan = plan.iter().any(|step| step.starts_with("SCAN") || step.ends_with("(workspace_id=?)"));
        scans += usize::from(scan);
        println!(
            "{} {}\n    {plan:?}",
            if scan { "SCAN" } else { "ok  " },
            query.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }
    std::process::exit(i32::from(scans > 0));
}
