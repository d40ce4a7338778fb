"""The interface text of the UI in English and Chinese, and which one a browser wants.

Gradio's own ``gr.I18n`` translates in the browser from ``navigator.language`` only and cannot be
switched from the page; it also cannot translate text the server makes (errors, notices, the
source cards). So the chat keeps its texts here, picks the language from the browser's
``Accept-Language`` (which follows ``navigator.languages``) or the choice stored in the browser,
and re-labels its components when the user switches.
"""

from __future__ import annotations

from typing import Literal

Lang = Literal["en", "zh"]
DEFAULT: Lang = "en"
LANGUAGES: dict[str, str] = {"en": "English", "zh": "中文"}

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Knowledge base",
        "subtitle": "Answers from your organisation's documents, with their sources.",
        "signed_in_as": "Signed in as {user}",
        "sign_out": "Sign out",
        "language": "Language",
        "collection": "Knowledge base",
        "no_collections": "No knowledge base is shared with you yet.",
        "conversations": "Conversations",
        "new_chat": "New conversation",
        "rename": "Rename",
        "rename_label": "Title of this conversation",
        "delete": "Delete",
        "question": "Your question",
        "question_placeholder": "Ask about your documents…",
        "send": "Ask",
        "stop": "Stop",
        "chat": "Chat",
        "copy": "Copy",
        "copied": "Copied",
        "thinking": "Searching the documents…",
        "stopped": "Stopped.",
        "sources": "Sources",
        "page": "page {page}",
        "section": "section",
        "version": "version",
        "indexed": "indexed {date}",
        "open_passage": "Open at the passage",
        "open_page": "Open at page {page}",
        "original": "Original file",
        "support": "Support from the sources: {share}",
        "fallback": "The generated answer was replaced by quotes from the sources.",
        "no_evidence": "No evidence: nothing in the documents you may read answers this. "
        "Try other words or another knowledge base.",
        "quota": "You have reached your usage limit. {when}",
        "busy": "The answer service is busy. {when}",
        "retry_in": "Try again in {seconds} s.",
        "retry_at_midnight": "It resets at 00:00 UTC (in {hours} h).",
        "expired": "Your session has ended; reload the page and sign in again.",
        "error": "The answer failed: {message}",
        "feedback_title": "Thanks. Tell us more (optional)",
        "feedback_up": "You marked this answer as helpful.",
        "feedback_down": "You marked this answer as not helpful.",
        "feedback_comment": "Comment",
        "feedback_placeholder": "What was wrong or missing?",
        "feedback_send": "Send comment",
        "feedback_saved": "Thank you: your feedback was saved.",
        "feedback_none": "Only your own saved answers can be rated.",
        "withheld": "[withheld: this answer cited documents you may no longer read]",
    },
    "zh": {
        "title": "知识库",
        "subtitle": "回答来自贵单位的文档，并附上出处。",
        "signed_in_as": "当前用户：{user}",
        "sign_out": "退出登录",
        "language": "语言",
        "collection": "知识库",
        "no_collections": "目前还没有与您共享的知识库。",
        "conversations": "对话",
        "new_chat": "新对话",
        "rename": "重命名",
        "rename_label": "对话标题",
        "delete": "删除",
        "question": "您的问题",
        "question_placeholder": "就您的文档提问…",
        "send": "提问",
        "stop": "停止",
        "chat": "对话",
        "copy": "复制",
        "copied": "已复制",
        "thinking": "正在检索文档…",
        "stopped": "已停止。",
        "sources": "出处",
        "page": "第 {page} 页",
        "section": "章节",
        "version": "版本",
        "indexed": "索引于 {date}",
        "open_passage": "打开并定位到该段落",
        "open_page": "打开第 {page} 页",
        "original": "原始文件",
        "support": "出处支持度：{share}",
        "fallback": "生成的回答未得到出处支持，已改为引用原文。",
        "no_evidence": "没有依据：您可阅读的文档中找不到能回答此问题的内容。请换个说法或选择其他知识库。",
        "quota": "您已达到使用上限。{when}",
        "busy": "回答服务繁忙。{when}",
        "retry_in": "请在 {seconds} 秒后重试。",
        "retry_at_midnight": "额度将于 UTC 00:00 重置（约 {hours} 小时后）。",
        "expired": "您的会话已结束，请刷新页面并重新登录。",
        "error": "回答失败：{message}",
        "feedback_title": "谢谢！还想补充什么吗（可选）",
        "feedback_up": "您认为这个回答有帮助。",
        "feedback_down": "您认为这个回答没有帮助。",
        "feedback_comment": "意见",
        "feedback_placeholder": "哪里不对或缺少什么？",
        "feedback_send": "提交意见",
        "feedback_saved": "谢谢，您的反馈已保存。",
        "feedback_none": "只能评价您自己已保存的回答。",
        "withheld": "[已隐藏：此回答引用了您现在无权阅读的文档]",
    },
}


def t(lang: str, key: str, **values: object) -> str:
    """The text ``key`` in ``lang`` (English when either is unknown), with ``values`` filled in."""
    table = TEXTS.get(lang, TEXTS[DEFAULT])
    text = table.get(key, TEXTS[DEFAULT][key])
    return text.format(**values) if values else text


def pick_language(accept_language: str | None, stored: str | None = None) -> Lang:
    """The language to show: the one chosen in this browser before, else the first of the
    browser's ``Accept-Language`` we have (by quality), else English."""
    if stored in LANGUAGES:
        return stored  # type: ignore[return-value]
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag:
            ranked.append((-quality, i, tag.lower()))
    for negative_quality, _, tag in sorted(ranked):
        if negative_quality >= 0:
            continue  # q=0: "not this one"
        base = tag.split("-")[0]
        if base in LANGUAGES:
            return base  # type: ignore[return-value]
    return DEFAULT
