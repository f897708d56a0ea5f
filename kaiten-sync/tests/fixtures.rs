//! The test kit's fixtures checked against the schema and the member parser: the column probes
//! cover every typed column by name, and the member shapes parse as `fixtures` documents them.
//! (Integration tests: the fixtures live in `kaiten-sync-testkit`, which depends on this crate.)

use kaiten_sync::{Batch, EntityKind};
use kaiten_sync_testkit::fixtures::{cards_with_member_shapes, column_probes};

/// Each typed column holds the field it is named after: every record of [`column_probes`] has a
/// distinct value in each field, and the expected value of each column is written by name,
/// independently of the declarations in `kaiten_sync::schema`, so a value declared under the
/// wrong column fails here.
#[test]
fn every_column_holds_the_value_of_its_own_field() {
    let probes = column_probes();
    for kind in EntityKind::ALL {
        assert!(probes.iter().any(|p| p.kind == kind), "no probe of {kind}");
    }
    for probe in &probes {
        let batch = probe.batch();
        let row = batch.rows().pop().unwrap();
        let table = probe.kind.table();
        let mut probed: Vec<&str> = probe.columns.iter().map(|c| c.column).collect();
        probed.sort_unstable();
        let mut declared: Vec<&str> = table.columns.iter().map(|c| c.name).collect();
        declared.sort_unstable();
        assert_eq!(probed, declared, "the probe of {} covers every column", probe.kind);
        for expected in &probe.columns {
            let at = table.columns.iter().position(|c| c.name == expected.column).unwrap();
            assert_eq!(row.values[at], expected.value, "{}.{}", probe.kind, expected.column);
        }
    }
}

#[test]
fn member_shapes_parse_as_documented() {
    let members = Batch::Cards(cards_with_member_shapes()).card_members();
    assert_eq!(members.cards, vec![1, 2, 4]);
    assert_eq!(members.links, vec![(1, 11, 2), (1, 12, 1), (1, 13, 1), (1, 16, 1), (1, 17, 1), (4, 23, 2)]);
}
