//! Domain families: a company's sites (regional domains, sister brands, microsites) that
//! share a strong identifier — an analytics, tag-manager or ad account id, as BuiltWith's
//! Relationships report them — grouped so that the company is one account in lists and
//! scores. Every domain of a family is a member; the book's members point to the
//! family's primary (the one with the most traffic), which carries the account.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use arrow::array::{Array, StringArray, TimestampMillisecondArray};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::store::table::TableBuilder;

/// One edge of a family: `domain` shares `via:identifier` with `related` (a row of
/// `related_domains`).
pub type Link = crate::modules::tables::RelatedRow;

/// A book domain's family: its id and the member that carries the account.
#[derive(Debug, Clone, PartialEq)]
pub struct Membership {
    pub family_id: String,
    pub primary: String,
}

/// The families of a snapshot: the `families` table's rows, and the book's memberships.
#[derive(Debug, Default)]
pub struct Families {
    pub rows: Vec<FamilyRow>,
    pub of_book: HashMap<String, Membership>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FamilyRow {
    pub family_id: String,
    pub domain: String,
    pub is_primary: bool,
    pub in_book: bool,
    /// The strong identifiers that tie it to the family, `ga:UA-1, gtm:GTM-2`.
    pub identifiers: String,
    /// When BuiltWith first and last saw them shared (epoch ms).
    pub first_seen: Option<i64>,
    pub last_seen: Option<i64>,
    /// The family's members in all, those not listed included.
    pub members: u64,
}

/// Other members (not in the book) a family lists at most: a brand's network of
/// microsites can run to thousands, which `related_domains` keeps; `members` counts them all.
pub const MAX_LISTED_OTHERS: usize = 100;

/// One row of `related_domains`, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct LinkRef<'a> {
    pub domain: &'a str,
    pub related: &'a str,
    pub via: &'a str,
    pub identifier: &'a str,
    pub first_seen: Option<i64>,
    pub last_seen: Option<i64>,
}

impl<'a> From<&'a Link> for LinkRef<'a> {
    fn from(l: &'a Link) -> Self {
        Self {
            domain: &l.domain,
            related: &l.related,
            via: &l.via,
            identifier: &l.identifier,
            first_seen: l.first_seen,
            last_seen: l.last_seen,
        }
    }
}

/// What ties a member in: its identifiers, and when they were first and last seen shared.
/// A sorted `Vec`, not a set: a family has hundreds of thousands of members at a million
/// targets, most with one identifier, and a set's first node alone takes 300 bytes.
#[derive(Debug, Clone, Default)]
struct Tie {
    identifiers: Vec<String>,
    first: Option<i64>,
    last: Option<i64>,
}

impl Tie {
    fn add(&mut self, link: &LinkRef) {
        let id = format!("{}:{}", link.via.to_ascii_lowercase(), link.identifier);
        if let Err(at) = self.identifiers.binary_search(&id) {
            self.identifiers.insert(at, id);
        }
        self.first = min_some(self.first, link.first_seen);
        self.last = self.last.max(link.last_seen);
    }
}

/// Families in two passes over the links, in memory that follows the book: book domains
/// are the nodes of a union-find; a site outside the book is only remembered by a 64-bit
/// hash of its name beside the book domain that listed it (16 bytes a link), and once
/// sorted, the book domains listing the same site are joined.
struct Grouper<'b> {
    strong: BTreeSet<String>,
    book: HashMap<&'b str, u32>,
    names: Vec<&'b str>,
    parent: Vec<u32>,
    ties: Vec<Tie>,
    /// (hash of an other site's name, the book domain that lists it), a pair per link.
    others: Vec<(u64, u32)>,
}

fn hash_of(name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

impl<'b> Grouper<'b> {
    /// `links`: how many links there are, so the list of other sites is sized once
    /// (growing it at a million targets held both the old and the new list).
    fn new(strong: &[String], book: &BTreeSet<&'b str>, links: usize) -> Self {
        let names: Vec<&str> = book.iter().copied().collect();
        Self {
            strong: strong.iter().map(|s| s.to_ascii_lowercase()).collect(),
            book: names.iter().enumerate().map(|(i, d)| (*d, i as u32)).collect(),
            parent: (0..names.len() as u32).collect(),
            ties: vec![Tie::default(); names.len()],
            names,
            others: Vec::with_capacity(links),
        }
    }

    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            self.parent[x as usize] = self.parent[self.parent[x as usize] as usize];
            x = self.parent[x as usize];
        }
        x
    }

    fn union(&mut self, a: u32, b: u32) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            self.parent[a.max(b) as usize] = a.min(b);
        }
    }

    /// The link's book domain, when the link is strong and comes from the book.
    fn source(&self, link: &LinkRef) -> Option<u32> {
        if !self.strong.contains(&link.via.to_ascii_lowercase()) {
            return None;
        }
        self.book.get(link.domain).copied()
    }

    fn add(&mut self, link: &LinkRef) {
        let Some(source) = self.source(link) else { return };
        self.ties[source as usize].add(link);
        match self.book.get(link.related).copied() {
            Some(related) => {
                self.ties[related as usize].add(link);
                self.union(source, related);
            }
            None => self.others.push((hash_of(link.related), source)),
        }
    }

    /// The families, their book members and (in a second pass over the same links,
    /// `again`) up to [`MAX_LISTED_OTHERS`] other members each. The rows go to `emit` in
    /// chunks, a family's rows together (families by id, members by domain), never all at
    /// once: at a million targets a family table has millions of rows. Returns the book's
    /// memberships.
    fn finish(
        mut self,
        visits: &HashMap<String, f64>,
        again: impl FnOnce(&mut dyn FnMut(LinkRef<'_>)) -> anyhow::Result<()>,
        emit: &mut dyn FnMut(&[FamilyRow]) -> anyhow::Result<()>,
    ) -> anyhow::Result<HashMap<String, Membership>> {
        // Book domains that list the same other site are one family; then each family's
        // other sites, counted once.
        let mut others = std::mem::take(&mut self.others);
        others.sort_unstable();
        for pair in others.windows(2) {
            if pair[0].0 == pair[1].0 {
                self.union(pair[0].1, pair[1].1);
            }
        }
        let mut size: HashMap<u32, u64> = HashMap::new();
        for (i, (hash, source)) in others.iter().enumerate() {
            if i == 0 || others[i - 1].0 != *hash {
                *size.entry(self.find(*source)).or_default() += 1;
            }
        }
        drop(others);
        let mut book_members: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for id in 0..self.names.len() as u32 {
            let root = self.find(id);
            // A book domain with no strong tie is in no family.
            if !self.ties[id as usize].identifiers.is_empty() {
                book_members.entry(root).or_default().push(id);
                *size.entry(root).or_default() += 1;
            }
        }
        book_members.retain(|root, _| size.get(root).copied().unwrap_or(0) >= 2);
        let mut of_book = HashMap::new();
        // Family id (its first book domain) → (root, primary).
        let mut families: BTreeMap<&str, (u32, &str)> = BTreeMap::new();
        for (root, members) in &book_members {
            // Ids follow the book's sort order: the first member is the first book domain.
            let family_id = self.names[members[0] as usize];
            let primary = members
                .iter()
                .map(|m| self.names[*m as usize])
                .max_by(|a, b| {
                    let (va, vb) = (visits.get(*a).copied().unwrap_or(-1.0), visits.get(*b).copied().unwrap_or(-1.0));
                    va.total_cmp(&vb).then(b.len().cmp(&a.len())).then(b.cmp(a))
                })
                .unwrap_or(family_id);
            for m in members {
                let membership = Membership { family_id: family_id.to_string(), primary: primary.to_string() };
                of_book.insert(self.names[*m as usize].to_string(), membership);
            }
            families.insert(family_id, (*root, primary));
        }
        // The other members, each once, up to the cap per family.
        let mut listed = OtherSites::default();
        again(&mut |link: LinkRef<'_>| {
            let Some(source) = self.source(&link) else { return };
            if self.book.contains_key(link.related) {
                return;
            }
            let root = self.find(source);
            if book_members.contains_key(&root) {
                listed.add(root, &link);
            }
        })?;
        let listed = listed.by_family();
        const CHUNK: usize = 65_536;
        let mut chunk: Vec<FamilyRow> = Vec::with_capacity(CHUNK);
        for (family_id, (root, primary)) in &families {
            let total = size[root];
            let first = chunk.len();
            for m in &book_members[root] {
                let domain = self.names[*m as usize];
                let tie = &self.ties[*m as usize];
                chunk.push(FamilyRow {
                    family_id: family_id.to_string(),
                    domain: domain.to_string(),
                    is_primary: domain == *primary,
                    in_book: true,
                    identifiers: tie.identifiers.join(", "),
                    first_seen: tie.first,
                    last_seen: tie.last,
                    members: total,
                });
            }
            for (domain, tie) in listed.of(*root) {
                chunk.push(FamilyRow {
                    family_id: family_id.to_string(),
                    domain: domain.to_string(),
                    is_primary: false,
                    in_book: false,
                    identifiers: tie.identifiers.join(", "),
                    first_seen: tie.first,
                    last_seen: tie.last,
                    members: total,
                });
            }
            chunk[first..].sort_by(|a, b| a.domain.cmp(&b.domain));
            if chunk.len() >= CHUNK {
                emit(&chunk)?;
                chunk.clear();
            }
        }
        if !chunk.is_empty() {
            emit(&chunk)?;
        }
        Ok(of_book)
    }
}

/// The other members the families list (sites outside the book, up to
/// [`MAX_LISTED_OTHERS`] a family), held compactly: at a million targets there are
/// millions, and a map of names to sets of identifiers per family held 300 bytes each.
/// Each site's name is kept once in one buffer, each identifier once, and a link is a
/// record of 40 bytes.
#[derive(Default)]
struct OtherSites {
    names: String,
    /// A site: its family's root, and its name's place in `names`.
    sites: Vec<(u32, usize, u32)>,
    /// (root, hash of the name) → site.
    by_key: HashMap<(u32, u64), u32>,
    listed: HashMap<u32, usize>,
    identifiers: HashMap<String, u32>,
    identifier_text: Vec<String>,
    /// (site, identifier, first seen, last seen), a record per link.
    links: Vec<(u32, u32, Option<i64>, Option<i64>)>,
}

impl OtherSites {
    fn name(&self, site: u32) -> &str {
        let (_, start, len) = self.sites[site as usize];
        &self.names[start..start + len as usize]
    }

    /// A link from a family (`root`) to a site outside the book.
    fn add(&mut self, root: u32, link: &LinkRef) {
        let key = (root, hash_of(link.related));
        let site = match self.by_key.get(&key) {
            // Two names with one 64-bit hash in one family: the first keeps the place.
            Some(&site) if self.name(site) != link.related => return,
            Some(&site) => site,
            None => {
                let listed = self.listed.entry(root).or_default();
                if *listed >= MAX_LISTED_OTHERS {
                    return;
                }
                *listed += 1;
                let site = self.sites.len() as u32;
                self.sites.push((root, self.names.len(), link.related.len() as u32));
                self.names.push_str(link.related);
                self.by_key.insert(key, site);
                site
            }
        };
        let id = format!("{}:{}", link.via.to_ascii_lowercase(), link.identifier);
        let identifier = match self.identifiers.get(&id) {
            Some(&i) => i,
            None => {
                let i = self.identifier_text.len() as u32;
                self.identifier_text.push(id.clone());
                self.identifiers.insert(id, i);
                i
            }
        };
        self.links.push((site, identifier, link.first_seen, link.last_seen));
    }

    /// The sites ordered by family and name, and each site's links together.
    fn by_family(mut self) -> ListedOthers {
        self.by_key = HashMap::new();
        self.identifiers = HashMap::new();
        self.listed = HashMap::new();
        self.links.sort_unstable_by_key(|l| (l.0, l.1));
        let mut starts = Vec::with_capacity(self.sites.len() + 1);
        let mut at = 0;
        for site in 0..self.sites.len() as u32 {
            starts.push(at);
            while at < self.links.len() && self.links[at].0 == site {
                at += 1;
            }
        }
        starts.push(at);
        let mut order: Vec<u32> = (0..self.sites.len() as u32).collect();
        order.sort_unstable_by(|a, b| {
            let (ra, rb) = (self.sites[*a as usize].0, self.sites[*b as usize].0);
            ra.cmp(&rb).then_with(|| self.name(*a).cmp(self.name(*b)))
        });
        ListedOthers { sites: self, order, starts }
    }
}

/// [`OtherSites`] in families' order.
struct ListedOthers {
    sites: OtherSites,
    order: Vec<u32>,
    starts: Vec<usize>,
}

impl ListedOthers {
    /// A family's other members by name, each with what ties it in.
    fn of(&self, root: u32) -> impl Iterator<Item = (&str, Tie)> + '_ {
        let root_of = |site: &u32| self.sites.sites[*site as usize].0;
        let from = self.order.partition_point(|s| root_of(s) < root);
        let to = self.order.partition_point(|s| root_of(s) <= root);
        self.order[from..to].iter().map(move |&site| {
            let mut tie = Tie::default();
            let links = &self.sites.links[self.starts[site as usize]..self.starts[site as usize + 1]];
            for (i, (_, identifier, first, last)) in links.iter().enumerate() {
                if i == 0 || links[i - 1].1 != *identifier {
                    tie.identifiers.push(self.sites.identifier_text[*identifier as usize].clone());
                }
                tie.first = min_some(tie.first, *first);
                tie.last = tie.last.max(*last);
            }
            tie.identifiers.sort_unstable();
            (self.sites.name(site), tie)
        })
    }
}

/// Groups the domains `links` join through a strong identifier (`strong`, lower case)
/// into families that hold at least one book domain. A family's id is its first book
/// domain (in sort order); its primary is the book member with the most monthly visits
/// (`visits`), then the shortest domain, then the first in sort order.
pub fn group(links: &[Link], strong: &[String], book: &BTreeSet<&str>, visits: &HashMap<String, f64>) -> Families {
    let mut grouper = Grouper::new(strong, book, links.len());
    for link in links {
        grouper.add(&link.into());
    }
    let again = |f: &mut dyn FnMut(LinkRef<'_>)| {
        links.iter().for_each(|l| f(l.into()));
        Ok(())
    };
    let mut rows = Vec::new();
    let of_book = grouper
        .finish(visits, again, &mut |chunk| {
            rows.extend_from_slice(chunk);
            Ok(())
        })
        .unwrap_or_default();
    Families { rows, of_book }
}

/// [`group`] over a stored `related_domains` table, read twice, never held as rows; the
/// `families` rows go to `emit` a chunk at a time. Returns the book's memberships.
pub fn group_table(
    bytes: &Bytes,
    strong: &[String],
    book: &BTreeSet<&str>,
    visits: &HashMap<String, f64>,
    emit: &mut dyn FnMut(&[FamilyRow]) -> anyhow::Result<()>,
) -> anyhow::Result<HashMap<String, Membership>> {
    let links = match bytes.is_empty() {
        true => 0,
        false => ParquetRecordBatchReaderBuilder::try_new(bytes.clone())?.metadata().file_metadata().num_rows(),
    };
    let mut grouper = Grouper::new(strong, book, usize::try_from(links).unwrap_or(0));
    for_each_link(bytes, &mut |link| grouper.add(&link))?;
    grouper.finish(visits, |f| for_each_link(bytes, f), emit)
}

fn min_some(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Each row of a stored `related_domains` table (rows stored before `first_seen` existed
/// have no dates), a batch at a time.
fn for_each_link(bytes: &Bytes, f: &mut dyn FnMut(LinkRef<'_>)) -> anyhow::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    for batch in ParquetRecordBatchReaderBuilder::try_new(bytes.clone())?.build()? {
        let batch = batch?;
        let text = |name: &str| -> anyhow::Result<StringArray> {
            let column = batch.column_by_name(name).ok_or_else(|| anyhow::anyhow!("related_domains has no {name}"))?;
            column
                .as_any()
                .downcast_ref::<StringArray>()
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("related_domains.{name} is not text"))
        };
        let time = |name: &str| {
            batch.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<TimestampMillisecondArray>().cloned())
        };
        let (domains, related, via, identifiers) =
            (text("domain")?, text("related")?, text("via")?, text("identifier")?);
        let (first, last) = (time("first_seen"), time("last_seen"));
        let at = |times: &Option<TimestampMillisecondArray>, i: usize| {
            times.as_ref().filter(|t| !t.is_null(i)).map(|t| t.value(i))
        };
        for i in 0..batch.num_rows() {
            f(LinkRef {
                domain: domains.value(i),
                related: related.value(i),
                via: via.value(i),
                identifier: identifiers.value(i),
                first_seen: at(&first, i),
                last_seen: at(&last, i),
            });
        }
    }
    Ok(())
}

/// Each domain's highest monthly visits in a stored `traffic` table.
pub fn visits(bytes: &Bytes) -> anyhow::Result<HashMap<String, f64>> {
    use polars::prelude::*;
    let mut out = HashMap::new();
    if bytes.is_empty() {
        return Ok(out);
    }
    let frame = super::read_parquet(bytes.clone(), &["domain", "monthly_visits"])?
        .group_by([col("domain")])
        .agg([col("monthly_visits").cast(DataType::Float64).max()])
        .collect()?;
    let (domains, visits) = (frame.column("domain")?.str()?, frame.column("monthly_visits")?.f64()?);
    for i in 0..frame.height() {
        if let (Some(domain), Some(v)) = (domains.get(i), visits.get(i)) {
            out.insert(domain.to_string(), v);
        }
    }
    Ok(out)
}

/// The `families` table.
pub fn batch(rows: &[FamilyRow], snapshot_id: &str) -> anyhow::Result<RecordBatch> {
    Ok(TableBuilder::new()
        .text("family_id", rows.iter().map(|r| Some(&r.family_id)))
        .text("domain", rows.iter().map(|r| Some(&r.domain)))
        .boolean("is_primary", rows.iter().map(|r| Some(r.is_primary)))
        .boolean("in_book", rows.iter().map(|r| Some(r.in_book)))
        .text("identifiers", rows.iter().map(|r| Some(&r.identifiers)))
        .timestamp_ms("first_seen", rows.iter().map(|r| r.first_seen))
        .timestamp_ms("last_seen", rows.iter().map(|r| r.last_seen))
        .int("members", rows.iter().map(|r| Some(r.members as i64)))
        .text("snapshot_id", rows.iter().map(|_| Some(snapshot_id)))
        .finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(domain: &str, related: &str, via: &str, id: &str, first: i64) -> Link {
        Link {
            domain: domain.into(),
            related: related.into(),
            via: via.into(),
            identifier: id.into(),
            first_seen: Some(first),
            last_seen: Some(first + 10),
        }
    }

    #[test]
    fn sites_sharing_a_strong_identifier_are_one_family_with_the_busiest_book_site_primary() {
        let links = vec![
            link("acme.com", "acme.de", "ga", "UA-1", 100),
            link("acme.com", "acme.fr", "ga", "UA-1", 50),
            link("acme.de", "acme-promo.com", "GTM", "GTM-9", 70),
            // A shared host says nothing of ownership.
            link("acme.com", "other.com", "ip", "1.2.3.4", 10),
            link("solo.com", "solo.co.uk", "ga", "UA-2", 5),
            // No book domain: not a family of the book.
            link("x.com", "y.com", "ga", "UA-3", 5),
        ];
        let strong: Vec<String> = crate::config::FamilySettings::default().identifiers;
        let book: BTreeSet<&str> = ["acme.com", "acme.de", "solo.com", "other.com"].into_iter().collect();
        let visits: HashMap<String, f64> = [("acme.com".to_string(), 10.0), ("acme.de".to_string(), 900.0)].into();
        let families = group(&links, &strong, &book, &visits);
        let acme = &families.of_book["acme.com"];
        assert_eq!(acme, &families.of_book["acme.de"]);
        assert_eq!((acme.family_id.as_str(), acme.primary.as_str()), ("acme.com", "acme.de"));
        assert_eq!(families.of_book["solo.com"].primary, "solo.com");
        assert!(!families.of_book.contains_key("other.com"), "an IP is not a family tie");
        let members: Vec<&str> =
            families.rows.iter().filter(|r| r.family_id == "acme.com").map(|r| r.domain.as_str()).collect();
        assert_eq!(members, ["acme-promo.com", "acme.com", "acme.de", "acme.fr"]);
        let de = families.rows.iter().find(|r| r.domain == "acme.de").unwrap();
        assert_eq!((de.identifiers.as_str(), de.first_seen, de.last_seen), ("ga:UA-1, gtm:GTM-9", Some(70), Some(110)));
        assert!(de.is_primary && de.in_book);
        assert!(families.rows.iter().all(|r| r.family_id != "x.com"));
    }

    #[test]
    fn a_family_lists_its_first_other_sites_up_to_the_cap_each_once_with_all_its_identifiers() {
        let mut links = vec![
            link("brand.com", "brand.de", "ga", "UA-7", 30),
            // One other site tied in twice, by two members and two identifiers.
            link("brand.com", "shop.net", "gtm", "GTM-1", 40),
            link("brand.de", "shop.net", "ga", "UA-7", 20),
        ];
        let extra = MAX_LISTED_OTHERS + 5;
        for i in 0..extra {
            links.push(link("brand.de", &format!("micro-{i:03}.com"), "ga", "UA-7", 60));
        }
        // Seen again after the cap is reached: still listed once, its identifiers merged.
        links.push(link("brand.com", "shop.net", "ga", "UA-7", 10));
        let strong: Vec<String> = crate::config::FamilySettings::default().identifiers;
        let book: BTreeSet<&str> = ["brand.com", "brand.de"].into_iter().collect();
        let families = group(&links, &strong, &book, &HashMap::new());
        let rows: Vec<&FamilyRow> = families.rows.iter().filter(|r| r.family_id == "brand.com").collect();
        // The two book members and the first MAX_LISTED_OTHERS other sites, each once.
        assert_eq!(rows.len(), 2 + MAX_LISTED_OTHERS);
        assert!(rows.iter().all(|r| r.members == (2 + 1 + extra) as u64), "{:?}", rows[0]);
        assert!(rows.windows(2).all(|w| w[0].domain < w[1].domain), "members by domain");
        let shop = rows.iter().find(|r| r.domain == "shop.net").unwrap();
        assert_eq!(
            (shop.identifiers.as_str(), shop.first_seen, shop.last_seen, shop.in_book),
            ("ga:UA-7, gtm:GTM-1", Some(10), Some(50), false)
        );
        assert!(rows.iter().any(|r| r.domain == "micro-098.com") && !rows.iter().any(|r| r.domain == "micro-099.com"));
    }
}
