"""A LangChain RAG chain over a Matryoshka retriever, with the offline default model.

The retriever searches a 64-dim prefix of all-MiniLM-L6-v2's 384-dim embeddings, then rescores
the shortlist with the full vectors. A fake chat model stands in for a real LLM, so this runs
offline; swap in any LangChain chat model (``ChatOpenAI(...)``, ...) for real answers.

Run: python examples/langchain_rag.py
"""

from __future__ import annotations

import os

from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompt_values import PromptValue
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough

from matryoshka_retrieval import SentenceTransformerEncoder
from matryoshka_retrieval.langchain import MatryoshkaRetriever

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is loaded (offline) in main()

TEXTS = {  # id -> (text, topic)
    "ls": ("ls lists the files in a directory.", "files"),
    "cp": ("cp copies files and directories.", "files"),
    "df": ("df reports free disk space per file system.", "disk"),
    "du": ("du estimates the disk space used by each directory.", "disk"),
    "cal": ("cal displays a calendar for the current month.", "time"),
}
DOCUMENTS = [
    Document(id=id_, page_content=text, metadata={"topic": topic})
    for id_, (text, topic) in TEXTS.items()
]
QUESTION = "How do I find out how much disk space is free?"


def format_docs(docs: list[Document]) -> str:
    """One line per retrieved document, with its id and full-dim score."""
    return "\n".join(f"[{d.id}] (score {d.metadata['score']:.3f}) {d.page_content}" for d in docs)


def main() -> None:
    retriever = MatryoshkaRetriever.from_documents(
        DOCUMENTS,
        SentenceTransformerEncoder(),  # all-MiniLM-L6-v2, 384 dims, loaded offline
        coarse_dim=64,  # coarse search on the first 64 dims ...
        rescore_multiplier=4,  # ... for a shortlist of 4 x k, rescored with all 384
        k=2,
    )
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "Answer the question using only this context:\n{context}"),
            ("human", "{question}"),
        ]
    )
    llm = GenericFakeChatModel(
        messages=iter([AIMessage(content="Run `df -h`: it reports the free space per disk.")])
    )

    def show_prompt(value: PromptValue) -> PromptValue:
        print("Prompt sent to the model, with the retrieved context:")
        print(value.to_string())
        print()
        return value

    chain = (
        {"context": retriever | format_docs, "question": RunnablePassthrough()}
        | prompt
        | RunnableLambda(show_prompt)
        | llm
        | StrOutputParser()
    )
    answer = chain.invoke(QUESTION)
    print(f"Answer: {answer}")


if __name__ == "__main__":
    main()
