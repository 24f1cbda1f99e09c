//! Rule codes carried by every decision line, and the source sentence each applies, quoted
//! exactly as the source prints it (POLICY.md ruling 11); where the project reads an evident
//! typo differently, the decision says so next to the quotation. A decision lists the rules it
//! used with their text, so an auditor needs nothing else to read it.
//!
//! The source is embedded (`source/lucheng-2023-policy.zh.txt`); a test checks that every
//! quotation is a verbatim passage of it.

/// The source text as published.
pub const SOURCE: &str = include_str!("../source/lucheng-2023-policy.zh.txt");

/// (code, source passage as printed). Codes: `M<measure>` + sentence letter, `SR<n>` = 附则 n.
pub const RULES: &[(&str, &str)] = &[
    ("SR1", "本政策所指享受奖补的企业为申报时注册地和 财政收入在鹿城区范围内具有独立法人资格的企业,政策另有规 定除外。民办非企业、社会组织等视同企业享受政策。劳务派遣 企业申领补贴需与用工企业达成协议。"),
    ("SR2", "如与中央、省、市出台相关支持政策以及我区现有其他政策一致的,按照不重复享受、就高原则执行。"),
    ("SR3", "本政策自印发之日起施行,有效期至2023年6月30日 (措施已经明确时间的,从其规定)"),
    ("M1", "对春节期间留工的外地员工人数 30 人以上的企业,按外地参保员工(外地以身份证前 4 位为准,2023 年 1 月和 2 月参加职工养老保险)每人 500 元的标准发放一次性留工补助。留温时间以 2023 年 1 月 6 日至 2022 年 2 月 5 日未离开温州市为准。"),
    ("M4", "鼓励在温通信运营商为外地留温员工(手机号码归属地为温州)免费赠送 20G 可在春节期间使用的本地流量。"),
    ("M5", "对持有鹿城区公安分局签发的有效期内的《浙江省居住证》且留温过年的外地员工,给予 5 分的新居民积分奖励。"),
    ("M9a", "对规上制造业企业,2023年第一季度产值超过1000万元、4000万元,且同比增长超过18%的,分别给予一次性10万元、20万元奖励;"),
    ("M9b", "在此基础上,2022年度产值10亿元以上的制造业企业,增长超过18%的部分,按每同比再增加1个百分点予以5万元奖励,每家企业最高奖励80万元。"),
    ("M9c", "若不满足上述条件,但符合2022年产值在2000万元以上的规上制造业企业,且2023年第一季度产值同比提升25%以上(含)的,给予5万元的一次性奖励(2022年度小升规工业企业在2023年第一季度产值达800万元及以上,按5万元奖励)"),
    ("M10a", "鼓励企业一季度赴境外参展拓市场,对企业的出境人员费用提高补助,其中境外展会举办地为亚洲区域的,每人给予8000元人员费补助,亚洲地区以外的,每人给予1.5万元人员费补助,单个展会每家企业最高不超过4人次。"),
    ("M10b", "加大RCEP合作交流支持,引导外贸企业积极赴RCEP其他成员国开展重要商务活动(参展除外),对企业出入境机票费用给予30%的补助。"),
    ("M18", "2023年1月22日至2月2日,制造业企业租用(含合租)大巴车跨省\"点对点\"组织外地员工返岗,给予包车费用50%补贴,每家企业最高不超过20万元。"),
    ("M19a", "对跨省就业的对口帮扶地区脱贫人口按规定发放一次性交通补助。"),
    ("M19b", "2023年1月22日至2月2日,对自行返岗就业外地参保员工(外地以身份证前4位为准,2023年1月和2月参加职工养老保险),给予返岗交通补贴。通过企业代为办理并向属地街镇申报,补贴标准为市外省内50元/人、华东地区150元/人、华东以外地区200元/人。"),
    ("M21", "对为企业新引进员工 5 名以上的服务机构,可按每人不低于 500 元的标准给予奖励,最高不超过 10 万元,其中新引进员工以鹿城区首次参加职工养老保险为准。"),
];

/// How the project reads a passage that contains an evident typo: said next to the quotation.
pub const READINGS: &[(&str, &str)] = &[(
    "M1",
    "〔Huiqi reads the printed end date \"2022 年 2 月 5 日\" as 2023-02-05: an evident typo — the window cannot end before it starts, and the city plan it follows runs to 2023-02-05 (POLICY.md, Terms).〕",
)];

/// The source passage of a rule code, as printed.
pub fn text(code: &str) -> Option<&'static str> {
    RULES.iter().find(|(c, _)| *c == code).map(|(_, t)| *t)
}

/// What a decision quotes for a rule code: the passage as printed, followed by the project's
/// reading where it corrects a typo in it.
pub fn quoted(code: &str) -> String {
    let mut s = text(code).unwrap_or("").to_string();
    if let Some((_, note)) = READINGS.iter().find(|(c, _)| *c == code) {
        s.push(' ');
        s.push_str(note);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_quotation_is_verbatim_from_the_source() {
        for (code, text) in RULES {
            assert!(SOURCE.contains(text), "{code} is not quoted as printed");
        }
        assert!(quoted("M1").contains("2022 年 2 月 5 日未离开温州市为准"));
        assert!(quoted("M1").contains("evident typo"));
        assert!(!quoted("M9a").contains("typo"));
    }
}
