//! The Ruby rule's tests: constants, requires and gems.

use super::*;

#[test]
fn constants_used_outside_strings_comments_and_definitions() {
    let src = "module Rack\n  class Cookie < Abstract::Persisted\n    H = \"Set-Cookie #{Utils.x}\"\n    x = :Symbol\n    y = 'Quoted'\n  end\nend\n# Commented\nautoload :Lazy, 'lazy'\n=begin\nDoc\n=end\nclass A::B\nend\n";
    let got = constants_used(src);
    for c in ["Abstract", "Persisted", "H", "Utils"] {
        assert!(got.iter().any(|g| g == c), "{c}: {got:?}");
    }
    for c in [
        "Rack",
        "Cookie",
        "Set",
        "Symbol",
        "Quoted",
        "Commented",
        "Lazy",
        "Doc",
        "A",
        "B",
    ] {
        assert!(!got.iter().any(|g| g == c), "{c}: {got:?}");
    }
}

#[test]
fn requires_of_a_script() {
    let lang = RubyLang {
        load_path: vec![],
        gem_roots: vec![],
        trees: vec![],
        argv_files: vec![],
    };
    let text = "require 'json'\nrequire \"digest/sha2\"\nrequire_relative 'lib/x'\n# require 'nope'\nclass A\n  def f\n    require 'lazy'\n  end\nend\nrequire(\"time\") if x\nload \"conf.rb\"\nautoload :Foo, 'foo'\nrequires 'no'\n=begin\nrequire 'doc'\n=end\nautoload :Dep, File.expand_path('rubygems/dependency', __dir__)\nlib = 'digest/sha2'\nrequire lib\n";
    let got: Vec<(String, bool, bool)> = lang
        .parse(text)
        .into_iter()
        .map(|r| (r.spec, r.nested, r.relative))
        .collect();
    let s = |x: &str| x.to_string();
    assert_eq!(
        got,
        vec![
            (s("json"), false, false),
            (s("digest/sha2"), false, false),
            (s("lib/x"), false, true),
            (s("lazy"), true, false),
            (s("time"), false, false),
            (s("conf.rb"), false, false),
            (s("foo"), true, false),
            (s("rubygems/dependency"), true, true),
            (s("digest/sha2"), false, false),
        ]
    );
    let waits: Vec<Option<String>> = lang.parse(text).into_iter().map(|r| r.waits_for).collect();
    assert_eq!(waits[6], Some(s("Foo")));
    assert_eq!(waits[7], Some(s("Dep")));
    assert!(waits[..6].iter().all(Option::is_none));
    let stub =
        "require 'rubygems'\nload Gem.activate_bin_path('asciidoctor', 'asciidoctor', version)\n";
    let specs: Vec<String> = lang.parse(stub).into_iter().map(|r| r.spec).collect();
    assert_eq!(
        specs,
        vec![s("rubygems"), s("\0bin/asciidoctor/asciidoctor")]
    );
    // A word list iterated by a block that requires by interpolation (unicorn.rb).
    let list = "%w(const socket_helper\n   http_server).each do |s|\n  require_relative \"unicorn/#{s}\"\nend\n";
    let got: Vec<(String, bool)> = lang
        .parse(list)
        .into_iter()
        .map(|r| (r.spec, r.relative))
        .collect();
    assert_eq!(
        got,
        vec![
            (s("unicorn/const"), true),
            (s("unicorn/socket_helper"), true),
            (s("unicorn/http_server"), true),
        ]
    );
}
